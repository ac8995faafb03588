"""Pure parts of elastic scaling and placement: bundle arithmetic, targets, the control actor's rules."""

from __future__ import annotations

import json

import pytest

from skinr1.pipeline.scaling import ScaleControl, StopRequested, pool_target, submission_id
from skinr1.placement import fits, rollout_bundles, uniform_bundles


def test_single_gpu_engine_is_one_bundle_with_custom_resources():
    assert rollout_bundles(1.0, 1.0, {"rollout_node": 1}, 1) == [{"CPU": 1.0, "rollout_node": 1.0, "GPU": 1.0}]
    assert rollout_bundles(1.0, 0.0, {}, 1) == [{"CPU": 1.0}]


def test_sharded_engine_gets_one_gpu_bundle_per_shard_after_the_actor():
    bundles = rollout_bundles(2.0, 4.0, {}, 4)
    assert bundles[0] == {"CPU": 2.0}
    assert bundles[1:] == [{"GPU": 1.0}] * 4
    with pytest.raises(ValueError):
        rollout_bundles(1.0, 0.0, {}, 0)


def test_uniform_bundles_never_empty():
    assert uniform_bundles(2, 1.0, 1.0) == [{"CPU": 1.0, "GPU": 1.0}] * 2
    assert uniform_bundles(1, 0.0) == [{"CPU": 0.001}]  # Ray rejects an empty bundle
    assert uniform_bundles(1, 1.0, 1.0, {"learner_node": 1}) == [{"CPU": 1.0, "GPU": 1.0, "learner_node": 1.0}]


def test_fits_sums_bundles_against_free_resources():
    bundles = rollout_bundles(1.0, 0.0, {"rollout_slot": 1}, 1)
    assert fits(bundles, {"CPU": 3.0, "rollout_slot": 1.0})
    assert not fits(bundles, {"CPU": 3.0})  # the custom resource is missing
    assert not fits(bundles * 2, {"CPU": 3.0, "rollout_slot": 1.0})
    assert fits([], {})


def test_pool_target_follows_request_within_bounds():
    assert pool_target(None, 1, 4) == 4  # no request: grow to max when there is room
    assert pool_target(2, 1, 4) == 2
    assert pool_target(9, 1, 4) == 4
    assert pool_target(0, 1, 4) == 1


def test_scale_control_rejects_out_of_bounds_requests():
    control = ScaleControl(1, 3)
    assert control.requested_workers() is None
    assert control.request(2)["requested"] == 2
    with pytest.raises(ValueError, match="1..3"):
        control.request(4)
    assert control.requested_workers() == 2  # a bad request changes nothing
    control.report({"size": 2, "step": 5})
    assert control.status() == {"requested": 2, "stop_requested": False, "min_workers": 1, "max_workers": 3,
                                "size": 2, "step": 5}


def test_scale_control_records_a_stop_request():
    control = ScaleControl(1, 3)
    assert not control.stop_requested()
    assert control.request_stop()["stop_requested"] is True
    assert control.stop_requested()
    assert control.requested_workers() is None  # a stop does not resize the pool


def test_stop_requested_says_how_to_resume():
    stopped = StopRequested(7, 120)
    assert (stopped.step, stopped.steps) == (7, 120)
    assert "after step 7 of 120" in str(stopped) and "resumes" in str(stopped)


@pytest.mark.parametrize("command", [["scale", "--job", "j", "--rollout-workers", "2"], ["stop", "--job", "j"]])
def test_job_commands_need_a_cluster_address(command, monkeypatch, capsys):
    from skinr1.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(command) == 2
    assert "--address" in capsys.readouterr().err


def test_a_stop_request_ends_the_command_successfully(monkeypatch, capsys):
    """`skinr1 rl` stopped by `skinr1 stop` exits 0 (its job succeeds) and says how to resume."""
    import skinr1.cli.rl_cmd as rl_cmd
    from skinr1.cli import main

    def stopped(args):
        raise StopRequested(3, 10)

    monkeypatch.setattr(rl_cmd, "run", stopped)
    assert main(["rl", "--config", "unused.yaml"]) == 0
    assert "after step 3 of 10" in capsys.readouterr().out


def test_submission_id_is_read_from_the_job_config_of_ray_job_submit():
    environ = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"metadata": {"job_submission_id": "raysubmit_abc"}})}
    assert submission_id(environ) == "raysubmit_abc"
    assert submission_id({}) is None  # a driver started by hand: Ray's own job id is used instead
