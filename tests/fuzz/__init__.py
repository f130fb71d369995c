"""Seeded fuzzing of every input surface (``python3 -m tests.fuzz.run``; see README "Fuzzing")."""
