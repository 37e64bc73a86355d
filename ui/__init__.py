"""Streamlit pieces shared by the pages: cached services, widgets, flash messages."""
