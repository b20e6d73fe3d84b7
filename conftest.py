"""Test settings that must be in place before Django loads (read once by settings.py)."""

import os

os.environ["MASTHEAD_TESTING"] = "1"
os.environ["HUEY_IMMEDIATE"] = "1"
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("MASTHEAD_VAR_DIR", "/tmp/masthead-test-var")
