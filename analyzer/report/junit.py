"""``--format junit``: JUnit XML, one test case per rule per capture (as ruff's junit output).

A rule with findings in a capture is a failed test case listing them; a capture that could
not be read to its end adds an ``<error>`` test case. A capture of which nothing could be
read (not a capture, cut in its header) has only that error case: no rule passed on it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..pipeline import LintReport
from .text import finding_line


def render(report: LintReport) -> str:
    root = ET.Element("testsuites", name="multisa")
    total = failures = errors = 0
    for result in report.results:
        shown = report.shown(result)
        suite = ET.SubElement(root, "testsuite", name=result.path)
        s_fail = s_err = 0
        unread = bool(result.error) and not (result.analyzer.messages or result.analyzer.esp_packets)
        judged = [] if unread else report.rules
        for rule in judged:
            case = ET.SubElement(suite, "testcase", classname=result.path, name=f"{rule.code} {rule.name}")
            hits = [f for f in shown if f.code == rule.code]
            if hits:
                s_fail += 1
                failure = ET.SubElement(case, "failure", type=hits[0].severity.label,
                                        message=f"{len(hits)} finding{'s' if len(hits) != 1 else ''}: {rule.title}")
                failure.text = "\n".join(finding_line(f) for f in hits)
        if result.error:
            s_err += 1
            case = ET.SubElement(suite, "testcase", classname=result.path, name="read capture")
            ET.SubElement(case, "error", message=result.error).text = result.error
        tests = len(judged) + (1 if result.error else 0)
        suite.set("tests", str(tests))
        suite.set("failures", str(s_fail))
        suite.set("errors", str(s_err))
        total, failures, errors = total + tests, failures + s_fail, errors + s_err
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
