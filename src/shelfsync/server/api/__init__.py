"""The only package importing FastAPI/Starlette: thin routes over the services."""
