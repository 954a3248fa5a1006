"""Entry points that wire the components: the Prefect flow and the ``emoflow`` CLI."""
