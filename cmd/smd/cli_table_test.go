package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTableOutputAligned checks the table form of the list commands: every
// column of every row starts at the byte offset where its header starts,
// including rows whose values hold spaces (a connector name, "4s ago", a
// task's error message) or a tab (which would end a cell early).
func TestTableOutputAligned(t *testing.T) {
	t.Parallel()
	needDev(t)
	const (
		scope     = "tabletest" // an account of its own: no other test lists it
		secret    = "table-test-secret"
		spaceName = "Name With Spaces"
		tabName   = "Tab\tIn Name"
		desc      = "a description with spaces"
	)
	dir := t.TempDir()
	for id, name := range map[string]string{"tbl_spaces": spaceName, "tbl_tab": tabName} {
		file := filepath.Join(dir, id+".yaml")
		body := "identifier: " + id + "\nname: \"" + strings.ReplaceAll(name, "\t", `\t`) + "\"\nscope: " + scope +
			"\ncredential_type: instance_role\nregion: eu-west-1\ndelegate_selectors: [linux, gpu]\n"
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "", "connector", "delete", id, "--scope", scope) // an interrupted run's
		mustRun(t, "", "connector", "create", "-f", file)
		t.Cleanup(func() { run(t, "", "connector", "delete", id, "--scope", scope) })
	}
	run(t, "", "secret", "delete", secret, "--without-recovery", "--wait")
	t.Cleanup(func() { run(t, "", "secret", "delete", secret, "--without-recovery", "--wait") })
	mustRun(t, "v", "secret", "create", secret, "--description", desc, "--wait")
	// A failed task, for a MESSAGE with spaces.
	run(t, "", "secret", "restore", "table-test-missing", "--wait")

	tests := []struct {
		args   []string
		header []string
		// rows that must be there, as cells: "" matches any cell.
		want [][]string
	}{
		{
			args:   []string{"connector", "list", "--scope", scope},
			header: []string{"IDENTIFIER", "SCOPE", "NAME", "CREDENTIALS", "REGION", "PREFIX", "SELECTORS", "DEFAULT"},
			want: [][]string{
				{"tbl_spaces", scope, spaceName, "instance_role", "eu-west-1", "-", "gpu,linux", "-"},
				{"tbl_tab", scope, "Tab In Name", "instance_role", "eu-west-1", "-", "gpu,linux", "-"},
			},
		},
		{
			args:   []string{"connector", "list"},
			header: []string{"IDENTIFIER", "SCOPE", "NAME", "CREDENTIALS", "REGION", "PREFIX", "SELECTORS", "DEFAULT"},
			want:   [][]string{{"dev_aws", "default", "Local AWS emulator", "access_key", "us-east-1", "dev", "dev", "yes"}},
		},
		{
			args:   []string{"delegate", "list"},
			header: []string{"NAME", "STATE", "SCOPE", "TAGS", "RUNNING", "VERSION", "CONNECTED", "LAST SEEN"},
			want:   [][]string{{"dev", "connected", "*", "", "", "dev", "", ""}},
		},
		{
			args:   []string{"task", "list"},
			header: []string{"ID", "KIND", "STATE", "CODE", "ATTEMPT", "DELEGATE", "SELECTORS", "CREATED", "MESSAGE"},
			want: [][]string{
				{"", "secret.create", "succeeded", "OK", "1", "dev", "dev", "", ""},
				{"", "secret.restore", "failed", "NOT_FOUND", "", "dev", "dev", "", ""},
			},
		},
		{
			args:   []string{"secret", "list"},
			header: []string{"NAME", "DESCRIPTION", "CHANGED", "DELETED"},
			want:   [][]string{{secret, desc, "", "-"}},
		},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out := mustRun(t, "", tt.args...)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			starts := columnStarts(lines[0])
			if got := splitRow(lines[0], starts); !equalCells(got, tt.header) {
				t.Fatalf("smd %s: header cells = %q, want %q\n%s", strings.Join(tt.args, " "), got, tt.header, out)
			}
			var rows [][]string
			for i, line := range lines[1:] {
				if err := checkAligned(line, starts); err != "" {
					t.Errorf("smd %s: row %d %s:\n%s", strings.Join(tt.args, " "), i+1, err, out)
				}
				rows = append(rows, splitRow(line, starts))
			}
			for _, w := range tt.want {
				found := false
				for _, r := range rows {
					found = found || equalCells(r, w)
				}
				if !found {
					t.Errorf("smd %s: no row %q in\n%s", strings.Join(tt.args, " "), w, out)
				}
			}
		})
	}
}

// columnStarts returns the byte offsets where the header's columns start:
// 0 and every non-space after two or more spaces (tabwriter pads by at
// least two; a header such as "LAST SEEN" holds one).
func columnStarts(header string) []int {
	starts := []int{0}
	for i := 2; i < len(header); i++ {
		if header[i] != ' ' && header[i-1] == ' ' && header[i-2] == ' ' {
			starts = append(starts, i)
		}
	}
	return starts
}

// checkAligned reports how line fails to follow the columns that start at
// starts, or "": each column but the last is padded with at least two
// spaces up to the next start, and each cell that is not empty starts
// exactly where its column does.
func checkAligned(line string, starts []int) string {
	if strings.ContainsAny(line, "\t\r") {
		return "holds a tab or a carriage return"
	}
	if line == "" || line[0] == ' ' {
		return "does not start with a cell at byte 0"
	}
	for i := 1; i < len(starts); i++ {
		s := starts[i]
		if s > len(line) {
			return fmt.Sprintf("ends at byte %d, before column %d (byte %d)", len(line), i, s)
		}
		if line[s-2:s] != "  " {
			return fmt.Sprintf("has no two-space gap before column %d (byte %d): a cell runs into it", i, s)
		}
		end := len(line)
		if i+1 < len(starts) {
			end = min(starts[i+1], len(line))
		}
		if s < len(line) && line[s] == ' ' && strings.TrimSpace(line[s:end]) != "" {
			return fmt.Sprintf("has a cell of column %d that does not start at byte %d", i, s)
		}
	}
	return ""
}

// splitRow cuts line at starts and trims each cell.
func splitRow(line string, starts []int) []string {
	cells := make([]string, len(starts))
	for i, s := range starts {
		if s >= len(line) {
			continue
		}
		end := len(line)
		if i+1 < len(starts) && starts[i+1] < end {
			end = starts[i+1]
		}
		cells[i] = strings.TrimSpace(line[s:end])
	}
	return cells
}

// equalCells reports whether got matches want, "" in want matching any cell.
func equalCells(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if want[i] != "" && got[i] != want[i] {
			return false
		}
	}
	return true
}
