"""KeyVault: one-time, minion-bound bootstrap tokens that let a new machine join the Salt
master with trust in both directions.

:mod:`.vault` is the protocol and the master's token store (the runner and the engine use
it); :mod:`.client` is the node side, the ``salt-keyvault-bootstrap`` command (standard
library and ``cryptography`` only). Independent of Slurm: imports only
:mod:`salt_ext.lib.util`.
"""
