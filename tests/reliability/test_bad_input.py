"""Checkpoints never execute pickled code (bad settings: test_bad_config_table)."""


def test_checkpoints_never_execute_pickled_code(tmp_path):
    """torch.load(weights_only=True) refuses a pickle that would run code."""
    import pickle

    from experiments.store import load_checkpoint

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps(Exploit()))
    assert load_checkpoint(path) is None
