"""The model: the Conditional VAE (`cvae.py`), the latent mixture fitted after training (`latent_prior.py`), and
drawing synthetic rows for condition rows (`sampling.py`, shared by the generation actors and the served pyfunc)."""
