package apicheck

import (
	"bytes"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/api.txt from the source")

const module = "github.com/raftbus/raftbus"

func TestExportedAPI(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	got, err := listAPI(root)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "api.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run: go test ./internal/apicheck -update)", err)
	}
	if got == string(want) {
		return
	}
	added, removed := diffLines(string(want), got)
	t.Fatalf("the exported API changed; if that is intended, run\n\tgo test ./internal/apicheck -update\nand review the diff of %s.\nadded:\n\t%s\nremoved:\n\t%s",
		golden, strings.Join(added, "\n\t"), strings.Join(removed, "\n\t"))
}

// TestListAPISkipsUnexported guards the lister itself: an exported API
// check that silently lists nothing would pass forever.
func TestListAPISkipsUnexported(t *testing.T) {
	dir := t.TempDir()
	src := `package p
const A, b = 1, 2
type T struct { X int; y int; Embedded; unexp }
type Embedded struct{}
type unexp struct{}
type I interface { M(); m() }
func (T) Exported() {}
func (T) unexported() {}
func (unexp) Hidden() {}
func F(x int) (int, error) { return x, nil }
func f() {}
var V, w = 1, 2
`
	if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := listAPIOf(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	want := `pkg x
const A
func F(x int) (int, error)
type Embedded struct
type I interface
type I method M()
type T embeds Embedded
type T field X int
type T method (T) Exported()
type T struct
var V
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func listAPI(root string) (string, error) { return listAPIOf(root, module) }

func listAPIOf(root, modPath string) (string, error) {
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		name := d.Name()
		if path != root {
			if name == "internal" || name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if rel == "test" || rel == "cmd" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a nested module (bench)
			}
		}
		dirs = append(dirs, path)
		return nil
	})
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, dir := range dirs {
		rel, _ := filepath.Rel(root, dir)
		imp := modPath
		if rel != "." {
			imp += "/" + filepath.ToSlash(rel)
		}
		lines, err := packageAPI(dir)
		if err != nil {
			return "", err
		}
		if lines == nil {
			continue
		}
		fmt.Fprintf(&out, "pkg %s\n", imp)
		for _, l := range lines {
			out.WriteString(l)
			out.WriteByte('\n')
		}
	}
	return out.String(), nil
}

// packageAPI lists the exported API of the non-test Go files in dir, or
// nil if dir holds no library package.
func packageAPI(dir string) ([]string, error) {
	fset := token.NewFileSet()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		if f.Name.Name == "main" {
			return nil, nil
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, nil
	}
	str := func(n ast.Node) string {
		var b bytes.Buffer
		_ = printer.Fprint(&b, fset, n)
		return strings.Join(strings.Fields(b.String()), " ")
	}
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	for _, f := range files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				sig := strings.TrimPrefix(str(d.Type), "func")
				if d.Recv == nil {
					add("func %s%s", d.Name.Name, sig)
					continue
				}
				recv := str(d.Recv.List[0].Type)
				if !ast.IsExported(strings.TrimLeft(strings.SplitN(recv, "[", 2)[0], "*")) {
					continue
				}
				base := strings.TrimLeft(strings.SplitN(recv, "[", 2)[0], "*")
				add("type %s method (%s) %s%s", base, recv, d.Name.Name, sig)
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.ValueSpec:
						kind := d.Tok.String()
						for _, n := range s.Names {
							if !n.IsExported() {
								continue
							}
							if s.Type != nil {
								add("%s %s %s", kind, n.Name, str(s.Type))
							} else {
								add("%s %s", kind, n.Name)
							}
						}
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						typeAPI(s, str, add)
					}
				}
			}
		}
	}
	slices.Sort(lines)
	return slices.Compact(lines), nil
}

func typeAPI(s *ast.TypeSpec, str func(ast.Node) string, add func(string, ...any)) {
	name := s.Name.Name
	switch t := s.Type.(type) {
	case *ast.StructType:
		add("type %s struct", name)
		for _, f := range t.Fields.List {
			if len(f.Names) == 0 { // embedded
				typ := str(f.Type)
				base := typ[strings.LastIndex(typ, ".")+1:]
				if ast.IsExported(strings.TrimLeft(base, "*")) {
					add("type %s embeds %s", name, typ)
				}
				continue
			}
			for _, n := range f.Names {
				if n.IsExported() {
					add("type %s field %s %s", name, n.Name, str(f.Type))
				}
			}
		}
	case *ast.InterfaceType:
		add("type %s interface", name)
		for _, m := range t.Methods.List {
			if len(m.Names) == 0 {
				add("type %s embeds %s", name, str(m.Type))
				continue
			}
			for _, n := range m.Names {
				if n.IsExported() {
					add("type %s method %s%s", name, n.Name, strings.TrimPrefix(str(m.Type), "func"))
				}
			}
		}
	default:
		if s.Assign.IsValid() {
			add("type %s = %s", name, str(s.Type))
		} else {
			add("type %s %s", name, str(s.Type))
		}
	}
}

// diffLines returns the lines only in b (added) and only in a (removed).
func diffLines(a, b string) (added, removed []string) {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	for l := range mb {
		if !ma[l] {
			added = append(added, l)
		}
	}
	for l := range ma {
		if !mb[l] {
			removed = append(removed, l)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}
