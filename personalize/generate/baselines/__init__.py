"""The models the shipped Transformer is measured against: a first-order Markov chain and an LSTM over
notes (:mod:`~personalize.generate.baselines.lstm_markov`), and a phrase VAE that also generates behind the
:class:`~personalize.generate.Generator` interface (:mod:`~personalize.generate.baselines.vae`)."""
