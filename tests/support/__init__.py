"""Test support code shared by the unit and end-to-end suites (real servers, not mocks)."""
