"""latentgeo's Hydra launcher for one machine with GPUs (``hydra/launcher=workstation``,
``workstation_launcher``). It lives in the ``hydra_plugins`` namespace package because Hydra
only discovers (and only instantiates) launchers found there."""
