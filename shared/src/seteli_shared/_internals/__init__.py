"""What the project needs of its libraries beyond their public APIs, one module per library, each pinned to
the minor version tested and guarded by ``shared/tests/test_private_internals.py``."""
