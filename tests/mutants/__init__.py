"""The mutation check (make mutants): see __main__.py and catalogue.py."""
