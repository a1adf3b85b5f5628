"""Streamlit helpers shared by the builder and the pages."""
