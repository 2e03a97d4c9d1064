package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMESnippetsComeFromTheExample keeps the README's "From your own
// raft loop" snippets honest: every line of them (but the "// ..."
// elisions and closing braces) must be a line of this program, which CI
// compiles and runs, so the README cannot drift into code that does not
// compile (as its `Raft: yourNode` once did).
func TestREADMESnippetsComeFromTheExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "### From your own raft loop")
	if start < 0 {
		t.Fatal(`README.md has no "### From your own raft loop" section`)
	}
	section = section[start:]
	if end := strings.Index(section[4:], "\n## "); end >= 0 {
		section = section[:end+4]
	}

	sources, _ := filepath.Glob("*.go")
	have := map[string]bool{}
	for _, f := range sources {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			have[strings.TrimSpace(l)] = true
		}
	}

	blocks := strings.Split(section, "```go\n")[1:]
	if len(blocks) < 3 {
		t.Fatalf("found %d Go snippets in the section, want at least 3", len(blocks))
	}
	for _, blk := range blocks {
		code, _, _ := strings.Cut(blk, "```")
		for _, l := range strings.Split(code, "\n") {
			l = strings.TrimSpace(l)
			if l == "" || l == "}" || l == "})" || l == "// ..." {
				continue
			}
			if !have[l] {
				t.Errorf("README line %q is not in examples/ownraft", l)
			}
		}
	}
}
