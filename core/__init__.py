"""Plugboard's engine room: storage, secrets, catalog, inference core. No Streamlit here."""
