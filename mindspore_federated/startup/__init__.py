"""The original MindSpore Federated's ``startup`` module paths, for programs written for it.

Each module re-exports this project's implementation under the original's path and names
(see docs/compatibility.md).
"""
