"""The complete example in docs/yaml_reference.md stays valid."""
import pathlib
import re

from mindspore_federated import FLYamlData

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "yaml_reference.md"


def test_reference_example_is_valid(tmp_path):
    first_block = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)[0]
    path = tmp_path / "head.yaml"
    path.write_text(first_block, encoding="utf-8")
    data = FLYamlData(str(path))
    assert data.train_net_name == "head_loss_net"
    assert data.grad_scalers[0].inputs == ["hidden_states", "word_table"]
    assert data.compress_configs == {"hidden_states": {"compress_type": "min_max", "bit_num": 8}}
