"""Plain dataclasses and rules. No HTTP, no SQL, no pydantic."""
