"""
The Go-template subset of ``--format``: what docker's users write, printed
as Go prints it, and bad templates refused with a reason.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ross.client.base import CliError, format_rows, render_template
from ross.client.gotemplate import TemplateError, gofmt, render

INSPECT: dict[str, Any] = {
    "Name": "/web",
    "State": {"Status": "running", "Running": True, "ExitCode": 0, "Pid": 42},
    "Config": {"Cmd": ["sleep", "100"], "Labels": {"b": "2", "a": "1"}, "Env": [], "Entrypoint": None},
    "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "10.88.0.2"}, "other": {"IPAddress": "10.89.0.3"}}},
    "Mounts": [{"Source": "/v1", "Destination": "/data"}, {"Source": "/v2", "Destination": "/logs"}],
}


class RenderTests(SynchronousTestCase):
    def check(self, template: str, expected: str, data: Any = INSPECT) -> None:
        self.assertEqual(render(template, data), expected)

    def test_fields_print_as_go_does(self) -> None:
        self.check("{{.Name}} {{.State.Status}} {{.State.Running}} {{.State.Pid}}", "/web running true 42")
        self.check("{{.Config.Cmd}}", "[sleep 100]")
        self.check("{{.Config.Labels}}", "map[a:1 b:2]")
        self.check("{{.Config.Env}}|{{.Config.Entrypoint}}", "[]|<no value>")
        self.check("{{.Config.Nope}}", "<no value>")
        self.check("{{.}}", "hi", "hi")
        self.assertEqual(gofmt(1.0), "1")
        self.assertEqual(gofmt([True, None, {"k": [1]}]), "[true <no value> map[k:[1]]]")

    def test_json(self) -> None:
        self.check("{{json .Config.Labels}}", '{"b":"2","a":"1"}')
        self.check("{{json .Name}}", '"/web"')
        self.check("{{.Config.Cmd | json}}", '["sleep","100"]')
        self.check("{{json .}}", '{"x":"é<&>"}', {"x": "é<&>"})
        # A listing row's methods (.Label "k") are not data.
        self.check("{{json .}}", '{"Labels":"a=1","Rows":[{"b":2}]}',
                   {"Labels": "a=1", "Label": lambda key: "1", "Rows": [{"b": 2, "f": len}]})

    def test_range_and_variables(self) -> None:
        self.check("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.88.0.2 10.89.0.3 ")
        self.check("{{range $name, $net := .NetworkSettings.Networks}}{{$name}}={{$net.IPAddress}};{{end}}",
                   "bridge=10.88.0.2;other=10.89.0.3;")
        self.check("{{range $i, $m := .Mounts}}{{$i}}:{{$m.Destination}} {{end}}", "0:/data 1:/logs ")
        self.check("{{range .Config.Env}}x{{else}}none{{end}}", "none")
        self.check("{{range .Mounts}}{{$.Name}}{{.Source}} {{end}}", "/web/v1 /web/v2 ")

    def test_conditions(self) -> None:
        self.check("{{if .State.Running}}up{{else}}down{{end}}", "up")
        self.check("{{if .State.ExitCode}}failed{{else if .State.Running}}running{{else}}done{{end}}", "running")
        self.check('{{if eq .State.Status "running" "paused"}}live{{end}}', "live")
        self.check('{{if and .State.Running (ne .State.Pid 0)}}ok{{end}}', "ok")
        self.check("{{if not .Config.Env}}empty{{end}}", "empty")
        self.check("{{with .State}}{{.Status}}{{end}}{{with .Config.Env}}x{{else}}y{{end}}", "runningy")

    def test_functions(self) -> None:
        self.check('{{index .Config.Labels "a"}} {{index .Config.Cmd 1}}', "1 100")
        self.check('{{join .Config.Cmd ","}} {{upper .State.Status}} {{.Name | lower}}', "sleep,100 RUNNING /web")
        self.check('{{len .Mounts}} {{truncate .State.Status 3}} {{split "a:b" ":"}}', "2 run [a b]")
        self.check('{{printf "%s has %d mounts" .Name (len .Mounts)}}', "/web has 2 mounts")
        self.check('{{println .Name}}', "/web\n")

    def test_fields_of_parenthesized_calls(self) -> None:
        """
        A field of what parentheses give, as docker's documentation writes
        it: C{(index $conf 0).HostPort}.
        """
        data = {"Ports": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, "L": [{"A": {"B": 1}}]}
        self.assertEqual(render('{{range $p, $conf := .Ports}}{{$p}} -> {{(index $conf 0).HostPort}}{{end}}',
                                data), "80/tcp -> 8080")
        self.assertEqual(render("{{(index .L 0).A.B}} {{(index .L 0) | len}}", data), "1 1")

    def test_declarations(self) -> None:
        """
        Variables declared and assigned outside range, and by with.
        """
        data = {"Name": "web"}
        self.assertEqual(render("{{$n := .Name}}{{$n}}!", data), "web!")
        self.assertEqual(render("{{$n := 1}}{{$n = 2}}{{$n}}", data), "2")
        self.assertEqual(render("{{with $x := .Name}}{{$x}}-{{.}}{{end}}", data), "web-web")

    def test_printf(self) -> None:
        """
        Go's width, precision, flags and verbs.
        """
        data = {"Id": "abcdef1234567890", "N": 42, "F": 3.14159, "B": True, "S": "web"}
        self.assertEqual(render('{{printf "%.5s|%5d|%-5s|%x|%X|%T|%T|%05.2f|%q|%t|%%" .Id .N .S .N .S .N .S .F .S .B}}',
                                data), 'abcde|   42|web  |2a|776562|int|string|03.14|"web"|true|%')
        self.assertEqual(render('{{printf "%8.3f|%-8s|%v|%s|%d"  .F .S .N .S}}', data),
                         "   3.142|web     |42|web|%!d(MISSING)")
        self.assertEqual(render('{{printf "%2000000s|%.2000000f" .S .F}}', data), "%!(BADWIDTH)|%!(BADPREC)")

    def test_index_of_a_missing_key(self) -> None:
        """
        A string map's missing key is "" (docker's map[string]string, as
        scripts testing a label for emptiness expect); another map's nil.
        """
        data = {"Labels": {"a": "1"}, "None": {}, "Networks": {"bridge": {"IPAddress": "10.0.0.2"}}}
        self.assertEqual(render('[{{index .Labels "b"}}][{{index .None "b"}}][{{index .Networks "x"}}]', data),
                         "[][][<no value>]")

    def test_more_functions(self) -> None:
        data = {"Id": "abcdef", "L": [1, 2, 3]}
        self.assertEqual(render('{{slice .Id 0 3}} {{slice .L 1}} {{html "<a&\'>"}} {{urlquery "a b&c"}}', data),
                         "abc [2 3] &lt;a&amp;&#39;&gt; a+b%26c")

    def test_methods(self) -> None:
        data = {"Label": lambda key: {"com.x": "y"}.get(key, "")}
        self.check('{{.Label "com.x"}}|{{.Label "nope"}}', "y|", data)

    def test_trim_and_comments(self) -> None:
        self.check("a  {{- .Name -}}  b{{/* a comment */}}", "a/webb")
        self.check("{{range .Config.Cmd -}}\n  {{.}}\n{{- end}}", "sleep100")

    def test_bad_templates(self) -> None:
        for template, why in (
            ("{{.Name", "unclosed action"),
            ("x {{.Name}} {{.Name", "unclosed action"),
            ("{{nope .Name}}", 'function "nope" not defined'),
            ("{{if .Name}}x", "without {{end}}"),
            ("{{end}}", "unexpected {{end}}"),
            ("{{.State.Status.Deeper}}", "can't evaluate field Deeper"),
            ("{{index .Config.Cmd 9}}", "index out of range"),
            ("{{$nope}}", "undefined variable"),
            ("{{.Name ~}}", "unexpected"),
            ("{{(.Name}}", "unclosed left paren"),
            ("{{}}", "missing value"),
        ):
            with self.assertRaises(TemplateError) as caught:
                render(template, INSPECT)
            self.assertIn(why, str(caught.exception))

    def test_nothing_but_the_data(self) -> None:
        """Names are looked up in the data and the function table only."""
        self.assertEqual(render("{{.__class__}}", {"x": 1}), "<no value>")
        with self.assertRaises(TemplateError):
            render("{{.__class__.__name__}}", {})
        with self.assertRaises(TemplateError):
            render("{{.x.__class__}}", {"x": "text"})
        with self.assertRaises(TemplateError):
            render("{{__import__}}", {})


class CliFormatTests(SynchronousTestCase):
    def test_render_template_reads_escapes_and_reports_errors(self) -> None:
        self.assertEqual(render_template({"A": 1, "B": 2}, r"{{.A}}\t{{.B}}\n"), "1\t2\n")
        with self.assertRaises(CliError) as caught:
            render_template({}, "{{bogus}}")
        self.assertIn('template: function "bogus" not defined', str(caught.exception))

    def test_rows_and_tables(self) -> None:
        rows = [{"ID": "abc", "Names": "web", "Label": lambda k: "v1"},
                {"ID": "defdef", "Names": "db", "Label": lambda k: ""}]
        headers = {"ID": "CONTAINER ID"}
        self.assertEqual(format_rows(rows, "{{.Names}}", headers), "web\ndb\n")
        self.assertEqual(format_rows(rows, 'table {{.ID}}\\t{{.Names}}\\t{{.Label "k"}}', headers),
                         "CONTAINER ID   NAMES   LABEL\n"
                         "abc            web     v1\n"
                         "defdef         db\n")
        self.assertIsNone(format_rows(rows, "table", headers))
        self.assertEqual(format_rows([], r"table {{.ID}}\t{{.Names}}", headers), "CONTAINER ID   NAMES\n")
        self.assertEqual(format_rows([], "{{.ID}}", headers), "")
        with self.assertRaises(CliError):
            format_rows([], "{{if .ID}}", headers)
