"""The only package that speaks SQL: tables, engine, repositories, migrations."""
