"""The original MindSpore Federated's ``common`` module paths (vertical part), for programs
written for it: ``vfl_utils``, ``tensor_utils``, the argument checks of ``_checkparam``, and
``config.get_config`` (command-line configuration from a yaml of def_val/help/choices items)."""
