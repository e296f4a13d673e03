"""Names a user calls by hand are importable from the package root."""

import trl_distill


def test_dmc_components_and_judge_bases_are_exported():
    from trl_distill.dmc import compatibility
    from trl_distill.evaluation import judges

    assert trl_distill.relative_difficulty is compatibility.relative_difficulty
    assert trl_distill.capability is compatibility.capability
    assert trl_distill.Judge is judges.Judge and trl_distill.ChatJudge is judges.ChatJudge
    assert trl_distill.FunctionJudge is judges.FunctionJudge
    assert {"relative_difficulty", "capability", "Judge", "ChatJudge"} <= set(trl_distill.__all__)


def test_served_teacher_and_the_http_client_are_exported():
    from trl_distill.core import http_client, served_teacher

    assert trl_distill.ServedTeacher is served_teacher.ServedTeacher
    assert trl_distill.ChatCompletionsClient is http_client.ChatCompletionsClient
