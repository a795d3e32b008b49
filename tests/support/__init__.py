"""What the tests share: the real stack as pytest fixtures (loaded as plugins by tests/conftest.py)
and helpers. Test modules import from here, never from each other."""
