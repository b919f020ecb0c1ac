"""Packaging of mindspore_federated (split learning on MindSpore)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> list:
    lines = (HERE / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="mindspore_federated",
    version="0.1.0",
    description="Split learning (vertical federated learning) on MindSpore, with a two-party PanGu-alpha example",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["mindspore_federated", "mindspore_federated.*"]),
    install_requires=_requirements(),
    entry_points={"console_scripts": ["msfl-gen-certs=mindspore_federated.tools.gen_certs:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
