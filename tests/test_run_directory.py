"""`RunDirectory` undoes a failed run, except what a resumable run can continue from."""

import pytest

from bnas_tf._runs import RunDirectory, keep_after_a_checkpoint
from bnas_tf.errors import NonFiniteError


def fail_after(run_dir, *, checkpoint: bool, error: BaseException):
    (run_dir / "config.json").write_text("{}")
    if checkpoint:
        stage = run_dir / "checkpoints" / "stage1"
        stage.mkdir(parents=True)
        (stage / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"')
    raise error


@pytest.mark.parametrize("checkpoint, error, kept", [
    (True, RuntimeError("out of memory"), True),
    (True, OSError("disk full"), True),
    (False, RuntimeError("out of memory"), False),
    (True, NonFiniteError("loss nan"), False),     # a diverged run is removed all the same
])
def test_a_failed_run_is_kept_only_after_a_checkpoint_and_not_when_it_diverged(
        tmp_path, checkpoint, error, kept):
    run_dir = tmp_path / "runs" / "RUN"
    with pytest.raises(type(error)):
        with RunDirectory(run_dir, keep_on_error=keep_after_a_checkpoint(run_dir / "checkpoints")):
            fail_after(run_dir, checkpoint=checkpoint, error=error)
    assert run_dir.exists() == kept
    assert (tmp_path / "runs").exists() == kept    # the parent it created goes with it


def test_without_keep_on_error_a_failed_run_is_removed_even_after_a_checkpoint(tmp_path):
    run_dir = tmp_path / "RUN"
    with pytest.raises(RuntimeError):
        with RunDirectory(run_dir):
            fail_after(run_dir, checkpoint=True, error=RuntimeError("bug"))
    assert not run_dir.exists()
