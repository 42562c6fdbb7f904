"""Wire models shared by the server and the client (pydantic v2)."""
