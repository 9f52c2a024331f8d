"""Test-time adaptation (restore-from-restored): the loop, its step runners and the selection of the result."""
