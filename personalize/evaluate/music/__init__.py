"""Tell music from noise: metrics, noise baselines, overlap, a two-sample classifier and the music gate.

| module          | what it holds                                                                   |
|-----------------|---------------------------------------------------------------------------------|
| score           | ``Score``: pitched parts as note lists on a sixteenth grid, from MIDI or corpus |
| metrics         | the metrics (melody, repetition, cadence, voice-leading, meter, performance)   |
| baselines       | random notes in the scale; a first-order Markov chain trained on the corpus     |
| references      | held-out corpus pieces standing for each texture (chorale, tune, band)          |
| overlap         | medians, bands and Yang & Lerch overlap against the corpus                      |
| discriminate    | the two-sample classifier's cross-validated AUC                                 |
| gate            | ``check(pm, texture, key_pc, mode, meter)``: why a track fails, from corpus bands |
| run, plot, cli  | ``personalize eval music``                                                      |

``gate``, ``metrics`` and ``score`` import only numpy, pretty_midi and :mod:`personalize.music`, so the
nightly verification can use them without the corpus or torch.
"""
