"""
Tests for the pure half of ``./dev bench``: ratios and verdicts against
targets, the text and Markdown table, the JSON report's round trip, the
comparison of two runs and the self-contained HTML page. The bench itself
(bench/all.py) runs containers against docker and stays outside the suite.
"""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree

from twisted.trial.unittest import SynchronousTestCase

from ross.testing.benchreport import (
    Row,
    Target,
    bars_svg,
    cells,
    distribution_svg,
    from_json,
    median,
    percentile,
    ratio,
    ratio_svg,
    render_compare,
    render_html,
    render_methods,
    render_table,
    to_json,
    verdict,
)


def latency(ross: list[float], docker: list[float], target: Target | None = Target("<=", 0.5)) -> Row:
    return Row("run --rm", "wall of run --rm, 3 runs taking turns, median", "ms", target, ross, docker)


class FiguresTests(SynchronousTestCase):
    def test_ratio_is_ross_median_over_docker_median(self) -> None:
        self.assertEqual(ratio(latency([1, 2, 30], [4, 4, 400])), 0.5)

    def test_ratio_needs_both_sides(self) -> None:
        self.assertIsNone(ratio(latency([1.0], [])))
        self.assertIsNone(ratio(latency([], [1.0])))

    def test_percentile_is_a_seen_sample(self) -> None:
        samples = [float(i) for i in range(1, 11)]
        self.assertEqual(percentile(samples, 0.9), 9.0)
        self.assertEqual(percentile(samples, 0.5), 5.0)
        self.assertEqual(percentile([3.0], 0.9), 3.0)
        self.assertIsNone(percentile([], 0.9))
        self.assertIsNone(median([]))


class VerdictTests(SynchronousTestCase):
    def test_at_most_a_ratio(self) -> None:
        self.assertEqual(verdict(latency([50], [100])), "met")
        self.assertEqual(verdict(latency([51], [100])), "NOT met")

    def test_at_least_a_ratio(self) -> None:
        rate = Row("logs", "MB/s", "MB/s", Target(">=", 5), [500], [100])
        self.assertEqual(verdict(rate), "met")
        rate.ross = [499]
        self.assertEqual(verdict(rate), "NOT met")

    def test_bound_on_ross_alone_needs_no_docker(self) -> None:
        row = Row("version", "wall", "ms", Target("<=", 70, of="ross"), [69.0], [])
        self.assertEqual(verdict(row), "met")
        row.ross = [71.0]
        self.assertEqual(verdict(row), "NOT met")

    def test_ratio_target_without_docker(self) -> None:
        self.assertEqual(verdict(latency([1], [])), "no docker")

    def test_skipped_and_untargeted(self) -> None:
        self.assertEqual(verdict(Row("cri", "m", "ms", Target("<=", 1), skipped="no CRI")), "not run")
        self.assertEqual(verdict(latency([1], [2], target=None)), "-")


class TableTests(SynchronousTestCase):
    def test_cells(self) -> None:
        self.assertEqual(cells(latency([100, 110, 120], [200, 220, 240])),
                         ["run --rm", "110 ms", "220 ms", "0.50x", "<= 0.5x", "met"])
        self.assertEqual(cells(Row("ps", "m", "ms", Target("<=", 70, of="ross"), [80.0], [15.0]))[4:],
                         ["<= 70 ms", "NOT met"])

    def test_a_row_that_cannot_run_says_why(self) -> None:
        row = Row("cri", "m", "ms", skipped="Ross serves no CRI yet")
        self.assertEqual(cells(row)[-1], "not run: Ross serves no CRI yet")
        self.assertIn("not run: Ross serves no CRI yet", render_table([row]))

    def test_absent_docker_says_why(self) -> None:
        row = latency([1.0], [])
        row.docker_missing = "docker is not installed"
        self.assertEqual(cells(row)[2], "- (docker is not installed)")

    def test_text_columns_line_up(self) -> None:
        text = render_table([latency([100], [200]), Row("a much longer row name", "m", "s", None, [1.5], [3.0])])
        header, rule, first, second = text.splitlines()
        self.assertEqual(header.split(), ["row", "Ross", "docker", "ratio", "target", "met"])
        self.assertEqual(header.index("Ross"), first.index("100 ms"), second.index("1.50 s"))
        self.assertEqual(header.index("docker"), first.index("200 ms"), second.index("3.00 s"))
        self.assertEqual(rule.split()[0], "-" * len("a much longer row name"))

    def test_markdown(self) -> None:
        row = Row("a | b", "m", "ms", Target("<=", 0.5), [1.0], [4.0])
        text = render_table([row], markdown=True)
        self.assertEqual(text.splitlines()[:2], ["| row | Ross | docker | ratio | target | met |",
                                                 "|---|---|---|---|---|---|"])
        self.assertIn("| a \\| b | 1.00 ms | 4.00 ms | 0.25x | <= 0.5x | met |", text)

    def test_methods(self) -> None:
        text = render_methods([latency([1], [2]), Row("x", "how x is measured", "s")])
        self.assertEqual(text.splitlines(), ["run --rm  wall of run --rm, 3 runs taking turns, median",
                                             "x         how x is measured"])


class JsonTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        rows = [latency([1.5, 2.5], [3.0, 4.0]), Row("cri", "m", "ms", skipped="no CRI"),
                Row("ps", "m", "ms", Target("<=", 70, of="ross", source="issue 16"), [60.0], [], group="cli",
                    docker_missing="docker is not installed")]
        meta = {"date": "2026-12-05T00:00:00+00:00", "machine": {"cpus": 2}, "versions": {"ross": "abc"}}
        back, found = from_json(to_json(rows, meta))
        self.assertEqual(back, rows)
        self.assertEqual(found["machine"], {"cpus": 2})
        self.assertEqual(found["versions"], {"ross": "abc"})

    def test_samples_are_kept(self) -> None:
        data = json.loads(to_json([latency([1.5, 2.5], [3.0])], {}))
        self.assertEqual(data["rows"][0]["ross"], [1.5, 2.5])
        self.assertEqual(data["rows"][0]["target"], {"op": "<=", "value": 0.5, "of": "ratio", "source": ""})

    def test_not_a_report(self) -> None:
        self.assertRaises(ValueError, from_json, json.dumps({"rows": []}))


class CompareTests(SynchronousTestCase):
    def test_side_by_side(self) -> None:
        a = [latency([100], [200]), Row("gone", "m", "s", None, [1.0], [])]
        b = [latency([150], [200]), Row("new", "m", "s", None, [2.0], [])]
        lines = render_compare(a, b).splitlines()
        self.assertEqual(lines[0].split(), ["row", "Ross", "A", "ratio", "A", "met", "A", "Ross", "B", "ratio", "B",
                                            "met", "B", "Ross", "B/A"])
        self.assertEqual(lines[2].split(), ["run", "--rm", "100", "ms", "0.50x", "met", "150", "ms", "0.75x", "NOT",
                                            "met", "+50%"])
        self.assertEqual(lines[3].split(), ["gone", "1.00", "s", "-", "-", "(absent)", "-"])
        self.assertEqual(lines[4].split(), ["new", "(absent)", "2.00", "s", "-", "-", "-"])


class HtmlTests(SynchronousTestCase):
    def page(self) -> str:
        rows = [latency([1.0, 2.0, 3.0, 4.0], [4.0, 5.0, 6.0, 8.0]),
                Row("<script>alert(1)</script>", "m & n", "ms", Target("<=", 70, of="ross"), [80.0], [20.0]),
                Row("cri", "m", "ms", skipped="no <CRI>")]
        return render_html([("", rows, {"date": "today", "machine": {"cpus": 2}})])

    def test_self_contained(self) -> None:
        page = self.page()
        self.assertNotIn("<script>", page)
        self.assertEqual(re.findall(r"""(?:src|href)=["']?[a-z]+:""", page), [])
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", page)
        self.assertIn("not run: no &lt;CRI&gt;", page)

    def test_charts_are_well_formed_svg(self) -> None:
        page = self.page()
        svgs = re.findall(r"<svg.*?</svg>", page, re.S)
        # The first row: ratio bars and a distribution; the second: bars against 70 ms.
        self.assertEqual(len(svgs), 3)
        for svg in svgs:
            ElementTree.fromstring(svg)
        self.assertIn("target &lt;= 0.5x", svgs[0])
        self.assertIn("median 2.50 ms", svgs[1])
        self.assertIn("target &lt;= 70 ms", svgs[2])

    def test_two_runs(self) -> None:
        a, b = [latency([1.0], [2.0])], [latency([3.0], [2.0])]
        page = render_html([("A", a, {}), ("B", b, {})])
        self.assertIn("Ross vs docker: A vs B", page)
        bars = re.findall(r"<svg.*?</svg>", page, re.S)[0]
        self.assertEqual(re.findall(r"<title>([^<]*)</title>", bars), ["0.50x", "1.50x"])

    def test_no_figure_no_chart(self) -> None:
        self.assertEqual(bars_svg([("Ross", None, "#000")], [], "ms"), "")
        self.assertEqual(ratio_svg([("", latency([1.0], []))]), "")
        self.assertEqual(distribution_svg([("", latency([1.0, 2.0], [1.0, 2.0]))]), "")
