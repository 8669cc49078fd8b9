"""Pieces of the dashboards that are about one concern (big runs), kept out of the dashboard classes."""
