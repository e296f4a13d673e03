"""Answer pools for SCAS and DMC: several teachers answer every prompt, each answer verified (`build_pool`)."""
