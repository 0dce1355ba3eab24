// chart-render renders a Helm v3 chart without helm: Go's text/template,
// sprig (Debian's golang-github-masterminds-sprig-dev) and the handful of
// Helm built-ins the pylon chart uses (include, tpl, required, toYaml,
// fromYaml, toJson, .Values with values-file merging, .Release, .Chart,
// .Capabilities, .Template, .Files.Get).  Test-only: it exists so a broken chart is
// caught without a cluster, a helm binary or the network.
//
// Build (offline, GOPATH mode against Debian's /usr/share/gocode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o build/chart-render ./tests/chart/render
//
// Usage:
//
//	chart-render [-f values.yaml]... [--set-string k.a.b=v]... \
//	    [--release NAME] [--namespace NS] [--kube-version 1.30.0] \
//	    [--format json|yaml] [--notes] CHARTDIR
//
// json output: {"values": merged, "manifests": [{"source", "object"}],
// "notes": "..."}; every rendered document is parsed as YAML (duplicate
// keys and syntax errors fail the render).  Exit 1 with the error on
// stderr when a template fails (fail, required, a bad value).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml2 "gopkg.in/yaml.v2"
	yaml3 "gopkg.in/yaml.v3"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// normalize turns YAML-decoded data into what Helm hands templates: maps
// with string keys and every number a float64 (Helm decodes values through
// JSON), so template bugs such as comparing an int with a float show here
// as they would in Helm.
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, e := range t {
			t[k] = normalize(e)
		}
		return t
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []interface{}:
		for i, e := range t {
			t[i] = normalize(e)
		}
		return t
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	default:
		return v
	}
}

// forOutput converts whole floats back to integers so toYaml/toJson print
// 3, not 3.0 or 3e+00 (what sigs.k8s.io/yaml does for Helm).
func forOutput(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, e := range t {
			m[k] = forOutput(e)
		}
		return m
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = forOutput(e)
		}
		return m
	case []interface{}:
		l := make([]interface{}, len(t))
		for i, e := range t {
			l[i] = forOutput(e)
		}
		return l
	case float64:
		if t == float64(int64(t)) && t < 1e15 && t > -1e15 {
			return int64(t)
		}
		return t
	default:
		return v
	}
}

// coalesce merges src over dst (Helm: user values over chart values; a
// null in src deletes the key).
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sok := sv.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

func readYAMLMap(path string) (map[string]interface{}, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml3.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := normalize(v).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: not a YAML mapping", path)
	}
	return m, nil
}

// setString applies --set-string a.b.c=value.
func setString(vals map[string]interface{}, expr string) error {
	eq := strings.IndexByte(expr, '=')
	if eq <= 0 {
		return fmt.Errorf("--set-string %q: want key=value", expr)
	}
	keys := strings.Split(expr[:eq], ".")
	m := vals
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = expr[eq+1:]
	return nil
}

func toYAML(v interface{}) string {
	b, err := yaml2.Marshal(forOutput(v))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

type renderer struct {
	tmpl *template.Template
	// include depth guard (Helm: 1000).
	depth int
}

func (r *renderer) funcs() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["fromYaml"] = func(s string) map[string]interface{} {
		var v interface{}
		m := map[string]interface{}{}
		if err := yaml3.Unmarshal([]byte(s), &v); err != nil {
			m["Error"] = err.Error()
			return m
		}
		if mm, ok := normalize(v).(map[string]interface{}); ok {
			return mm
		}
		return m
	}
	f["toJson"] = func(v interface{}) string {
		b, err := json.Marshal(forOutput(v))
		if err != nil {
			return ""
		}
		return string(b)
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		r.depth++
		defer func() { r.depth-- }()
		if r.depth > 1000 {
			return "", fmt.Errorf("include %q: nested too deeply", name)
		}
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := r.tmpl.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["lookup"] = func(...interface{}) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

type apiVersions []string

// Has mirrors Helm's .Capabilities.APIVersions.Has.
func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// chartFiles mirrors Helm's .Files for the one call the chart uses: Get
// returns a non-template file's contents ("" when there is none, as in
// Helm).  Like Helm, files under templates/ and charts/, Chart.yaml,
// values.yaml and values.schema.json are not part of .Files, nor is a
// path outside the chart; .helmignore's simple patterns (name globs and
// "dir/") are honoured.
type chartFiles struct {
	dir    string
	ignore []string
}

func loadChartFiles(dir string) chartFiles {
	f := chartFiles{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, ".helmignore"))
	if err != nil {
		return f
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			f.ignore = append(f.ignore, l)
		}
	}
	return f
}

func (f chartFiles) ignored(rel string) bool {
	parts := strings.Split(rel, "/")
	switch {
	case parts[0] == "templates" || parts[0] == "charts",
		rel == "Chart.yaml", rel == "values.yaml", rel == "values.schema.json":
		return true
	}
	for _, pat := range f.ignore {
		if strings.HasSuffix(pat, "/") {
			for _, p := range parts[:len(parts)-1] {
				if p == strings.TrimSuffix(pat, "/") {
					return true
				}
			}
			continue
		}
		if ok, _ := filepath.Match(pat, rel); ok {
			return true
		}
		if ok, _ := filepath.Match(pat, parts[len(parts)-1]); ok {
			return true
		}
	}
	return false
}

// Get mirrors Helm's .Files.Get.
func (f chartFiles) Get(name string) string {
	rel := filepath.ToSlash(filepath.Clean(name))
	if filepath.IsAbs(name) || rel == ".." || strings.HasPrefix(rel, "../") ||
		f.ignored(rel) {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(f.dir, filepath.FromSlash(rel)))
	if err != nil {
		return ""
	}
	return string(b)
}

type manifest struct {
	Source string      `json:"source"`
	Object interface{} `json:"object"`
}

func main() {
	var valueFiles, sets multiFlag
	release := flag.String("release", "pylon", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "1.30.0", "Capabilities.KubeVersion")
	format := flag.String("format", "json", "json or yaml")
	withNotes := flag.Bool("notes", false, "also render NOTES.txt (json: \"notes\")")
	flag.Var(&valueFiles, "f", "values file (repeatable, later wins)")
	flag.Var(&sets, "set-string", "key.path=value (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: chart-render [-f values.yaml]... CHARTDIR")
		os.Exit(64)
	}
	if err := run(flag.Arg(0), valueFiles, sets, *release, *namespace,
		*kubeVersion, *format, *withNotes); err != nil {
		fmt.Fprintln(os.Stderr, "chart-render: "+err.Error())
		os.Exit(1)
	}
}

func run(dir string, valueFiles, sets []string, release, namespace,
	kubeVersion, format string, withNotes bool) error {
	chart, err := readYAMLMap(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return err
	}
	if chart["apiVersion"] != "v2" {
		return fmt.Errorf("%s/Chart.yaml: apiVersion must be v2", dir)
	}
	values, err := readYAMLMap(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		m, err := readYAMLMap(f)
		if err != nil {
			return err
		}
		values = coalesce(values, m)
	}
	for _, s := range sets {
		if err := setString(values, s); err != nil {
			return err
		}
	}
	chartName, _ := chart["name"].(string)
	chartObj := map[string]interface{}{
		"Name":        chartName,
		"Version":     fmt.Sprint(chart["version"]),
		"AppVersion":  fmt.Sprint(chart["appVersion"]),
		"Description": chart["description"],
		"Type":        chart["type"],
	}
	parts := strings.SplitN(strings.TrimPrefix(kubeVersion, "v"), ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("--kube-version %q: want MAJOR.MINOR.PATCH", kubeVersion)
	}
	minor, _ := strconv.Atoi(parts[1])
	apis := apiVersions{"v1", "apps/v1", "autoscaling/v2", "policy/v1",
		"rbac.authorization.k8s.io/v1", "events.k8s.io/v1"}
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chartObj,
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{
				"Version": "v" + strings.TrimPrefix(kubeVersion, "v"),
				"Major":   parts[0], "Minor": strconv.Itoa(minor),
				"GitVersion": "v" + strings.TrimPrefix(kubeVersion, "v"),
			},
			"APIVersions": apis,
			"HelmVersion": map[string]interface{}{"Version": "v3.14.0"},
		},
		"Files": loadChartFiles(dir),
	}

	// Parse every file under templates/ into one template set, named like
	// Helm does (<chart>/templates/<file>).
	r := &renderer{}
	r.tmpl = template.New(chartName).Option("missingkey=zero")
	r.tmpl.Funcs(r.funcs())
	var names []string
	tdir := filepath.Join(dir, "templates")
	err = filepath.WalkDir(tdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		name := chartName + "/" + filepath.ToSlash(rel)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if _, err := r.tmpl.New(name).Parse(string(b)); err != nil {
			return err
		}
		names = append(names, name)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)

	var out []manifest
	var yamlOut strings.Builder
	notes := ""
	for _, name := range names {
		base := filepath.Base(name)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || (isNotes && !withNotes) {
			continue
		}
		if !isNotes && !strings.HasSuffix(base, ".yaml") &&
			!strings.HasSuffix(base, ".yml") && !strings.HasSuffix(base, ".tpl") {
			continue
		}
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{
			"Name": name, "BasePath": chartName + "/templates",
		}
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			notes = text
			continue
		}
		for i, doc := range splitDocs(text) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var obj interface{}
			if err := yaml3.Unmarshal([]byte(doc), &obj); err != nil {
				return fmt.Errorf("%s (document %d): rendered YAML is invalid: %v\n%s",
					name, i+1, err, numbered(doc))
			}
			if _, ok := obj.(map[string]interface{}); !ok {
				return fmt.Errorf("%s (document %d): not a mapping", name, i+1)
			}
			out = append(out, manifest{Source: name, Object: forOutput(normalize(obj))})
			fmt.Fprintf(&yamlOut, "---\n# Source: %s\n%s\n", name, strings.TrimSpace(doc))
		}
	}
	if format == "yaml" {
		fmt.Print(yamlOut.String())
		if withNotes {
			fmt.Print("\nNOTES:\n" + notes)
		}
		return nil
	}
	res := map[string]interface{}{
		"values":    forOutput(values),
		"manifests": out,
	}
	if withNotes {
		res["notes"] = notes
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	return enc.Encode(res)
}

func splitDocs(text string) []string {
	var docs []string
	var cur []string
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, strings.Join(cur, "\n"))
			cur = nil
			continue
		}
		cur = append(cur, line)
	}
	return append(docs, strings.Join(cur, "\n"))
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func numbered(doc string) string {
	var b strings.Builder
	for i, line := range strings.Split(doc, "\n") {
		fmt.Fprintf(&b, "%4d | %s\n", i+1, line)
	}
	return b.String()
}
