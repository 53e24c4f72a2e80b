"""The contract suite: every store, sync and async, passes every test here."""
