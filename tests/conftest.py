"""Fixtures every test folder can use."""

pytest_plugins = ["fixtures.tokenizer"]
