"""Serving: a finished run (or the bundled model) answering for photos, on the command line and in a web app."""
