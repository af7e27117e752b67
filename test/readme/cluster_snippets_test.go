package readme

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// block is a fenced block of the README: its info string, first line
// number and lines.
type block struct {
	info  string
	line  int
	lines []string
}

// sectionBlocks returns the fenced blocks of the README's "### sub"
// under "## parent", failing when the subsection is missing.
func sectionBlocks(t *testing.T, readme, parent, sub string) []block {
	t.Helper()
	var out []block
	var cur *block
	inParent, in, found := false, false, false
	for n, line := range strings.Split(readme, "\n") {
		fence := strings.HasPrefix(strings.TrimSpace(line), "```")
		switch {
		case cur == nil && strings.HasPrefix(line, "## "):
			inParent, in = line == "## "+parent, false
		case cur == nil && strings.HasPrefix(line, "### "):
			in = inParent && line == "### "+sub
			found = found || in
		case !in:
		case cur == nil && fence:
			cur = &block{info: strings.TrimPrefix(strings.TrimSpace(line), "```"), line: n + 1}
		case fence:
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		}
	}
	if !found {
		t.Fatalf("README.md has no \"### %s\" under \"## %s\"", sub, parent)
	}
	return out
}

// commands joins a shell block's continued lines ("\" at the end) and
// drops trailing comments after two spaces.
func commands(b block) []string {
	var out []string
	cur := ""
	for _, l := range b.lines {
		if i := strings.Index(l, "   #"); i >= 0 {
			l = l[:i]
		}
		l = strings.TrimSpace(l)
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSpace(strings.TrimSuffix(l, "\\")) + " "
			continue
		}
		if cur+l != "" {
			out = append(out, cur+l)
		}
		cur = ""
	}
	return out
}

func readRepo(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatalf("%s (named by the README's \"Running several managers\"): %v", path, err)
	}
	return string(b)
}

var configPath = regexp.MustCompile("configs/[A-Za-z0-9_@./-]+[A-Za-z0-9]")

// TestIssue11READMEClusterSnippetsQuoteShippedFiles: what the README's
// "Running several managers" shows of systemd and Kubernetes is the
// files shipped in configs/: every configs/ path it names exists, the
// unit excerpt's lines are lines of the unit, every kubectl command is
// one the manifest's header gives, and what the prose says the manifest
// holds is in it.
func TestIssue11READMEClusterSnippetsQuoteShippedFiles(t *testing.T) {
	readme := readRepo(t, "README.md")
	start := strings.Index(readme, "\n## Running several managers\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Running several managers"`)
	}
	section := readme[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	for _, p := range configPath.FindAllString(section, -1) {
		readRepo(t, p)
	}

	// systemd: the excerpt quotes the unit; the install commands copy it.
	unit := readRepo(t, "configs/smd-manager@.service")
	unitLines := map[string]bool{}
	for _, l := range strings.Split(unit, "\n") {
		unitLines[strings.TrimSpace(l)] = true
	}
	var excerpt, install bool
	for _, b := range sectionBlocks(t, readme, "Running several managers", "systemd") {
		switch b.info {
		case "ini":
			if len(b.lines) < 3 || b.lines[0] != "# configs/smd-manager@.service (excerpt)" {
				t.Fatalf("README.md:%d: the unit excerpt must start with \"# configs/smd-manager@.service (excerpt)\"", b.line)
			}
			for _, l := range b.lines[1:] {
				if !unitLines[strings.TrimSpace(l)] {
					t.Errorf("README.md: the unit excerpt shows %q, which configs/smd-manager@.service does not hold", l)
				}
			}
			excerpt = true
		case "sh":
			for _, c := range commands(b) {
				if strings.Contains(c, "smd-manager@.service") {
					install = strings.HasPrefix(c, "sudo install ") && strings.Contains(c, " configs/smd-manager@.service ")
				}
			}
		}
	}
	if !excerpt || !install {
		t.Errorf("the systemd subsection shows the unit excerpt: %v, installs configs/smd-manager@.service: %v; want both", excerpt, install)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/smd manager -c /etc/smd/manager-%i.yaml", "EnvironmentFile=/etc/smd/manager-%i.env", "User=smd"} {
		if !unitLines[want] {
			t.Errorf("configs/smd-manager@.service lacks %q, which the README describes", want)
		}
	}

	// Kubernetes: the commands are the manifest's own.
	const manifestPath = "configs/kubernetes/manager-replicas.yaml"
	manifest := readRepo(t, manifestPath)
	var header block
	for _, l := range strings.Split(manifest, "\n") {
		if !strings.HasPrefix(l, "#") {
			break
		}
		header.lines = append(header.lines, strings.TrimPrefix(l, "#"))
	}
	given := map[string]bool{}
	for _, c := range commands(header) {
		given[c] = true
	}
	applied := false
	for _, b := range sectionBlocks(t, readme, "Running several managers", "Kubernetes") {
		if b.info != "sh" {
			continue
		}
		for _, c := range commands(b) {
			if !given[c] {
				t.Errorf("README.md: %q is not a command the header of %s gives", c, manifestPath)
			}
			applied = applied || c == "kubectl -n smd apply -f "+manifestPath
		}
	}
	if !applied {
		t.Errorf("the Kubernetes subsection does not apply %s", manifestPath)
	}
	checkManifest(t, manifest)
}

// checkManifest holds the manifest to what the README says it holds.
func checkManifest(t *testing.T, manifest string) {
	t.Helper()
	kinds := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(manifest)))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("manifest: %v", err)
		}
		meta, _ := doc["metadata"].(map[string]any)
		kinds[doc["kind"].(string)+"/"+meta["name"].(string)] = doc
	}
	for _, k := range []string{"ConfigMap/smd-manager", "Service/smd-manager", "Service/smd-manager-peers", "StatefulSet/smd-manager", "PodDisruptionBudget/smd-manager"} {
		if kinds[k] == nil {
			t.Errorf("the manifest has no %s, which the README names", k)
		}
	}
	spec := func(k string) map[string]any { m, _ := kinds[k]["spec"].(map[string]any); return m }
	if spec("Service/smd-manager-peers")["clusterIP"] != "None" {
		t.Error("Service/smd-manager-peers is not headless")
	}
	if s := spec("StatefulSet/smd-manager"); s["replicas"] != 3 || s["serviceName"] != "smd-manager-peers" {
		t.Errorf("StatefulSet/smd-manager: replicas %v, serviceName %v; the README says 3 behind smd-manager-peers", s["replicas"], s["serviceName"])
	}
	if spec("PodDisruptionBudget/smd-manager")["minAvailable"] != 2 {
		t.Error("the PodDisruptionBudget does not keep 2, as the README says")
	}
	for _, want := range []string{
		"name: prod",
		`value: "$(POD_NAME).smd-manager-peers.smd.svc.cluster.local:7070"`,
		"terminationGracePeriodSeconds: 30",
		"path: /readyz",
		"path: /healthz",
		"secretName: smd-manager-tls",
	} {
		if !strings.Contains(manifest, want) {
			t.Errorf("the manifest lacks %q, which the README describes", want)
		}
	}
}
