"""Flax modules of the A-GAME network and the recurrent model built on them."""
