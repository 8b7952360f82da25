"""A local web app: segment your own video in the browser (``python -m agame_jax.app``).

``server.create_app`` builds the FastAPI app around a ``runner.Runner`` (the model);
``__main__`` is the command line. See docs/app.md.
"""
