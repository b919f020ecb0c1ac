"""The original MindSpore Federated's ``common`` module paths (vertical part), for programs
written for it: ``vfl_utils``, ``tensor_utils`` and the argument checks of ``_checkparam``."""
