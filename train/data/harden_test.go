package data

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Binary files, devices and JSON lines in a plain-text file are refused
// with a message saying what the file looks like; a .jsonl file is read as
// JSON lines, and a byte-order mark is dropped.
func TestTextRefusesNonText(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	text := strings.Repeat("the quick brown fox jumps over the lazy dog. ", 100)
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 2000)...)
	elf := append([]byte("\x7fELF\x02\x01\x01"), []byte(text)...)
	elf[100] = 0
	ctrl := []byte(text)
	for i := 0; i < len(ctrl); i += 20 {
		ctrl[i] = 0x1b
	}
	jsonl := `{"text": "` + text + `"}` + "\n" + `{"text": "more"}` + "\n"
	cases := map[string]struct{ path, msg string }{
		"png":             {file("a.png", png), "not UTF-8 text (byte 0 is 0x89)"},
		"nul inside":      {file("elf.txt", elf), "NUL byte at offset 100"},
		"latin-1":         {file("l.txt", []byte(text+"caf\xe9")), "is not UTF-8 text"},
		"control chars":   {file("c.txt", ctrl), "control characters"},
		"jsonl as text":   {file("d.txt", []byte(jsonl)), "holds JSON lines"},
		"jsonl, bad line": {file("b.jsonl", []byte(jsonl+"[1, 2]\n")), `b.jsonl:3: invalid JSON: each line must be an object with a "text" string, got a JSON array`},
		"device":          {"/dev/null", "not a regular file"},
		"binary train.jsonl": {func() string {
			d := filepath.Join(dir, "ds")
			os.Mkdir(d, 0o755)
			file("ds/train.jsonl", png)
			return d
		}(), "train.jsonl is not UTF-8 text"},
	}
	for name, c := range cases {
		_, err := LoadText(c.path, 1, 2, 16)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v (want %q)", name, err, c.msg)
		}
	}
	// /dev/zero fails at once rather than reading forever.
	start := time.Now()
	if _, err := LoadText("/dev/zero", 1, 2, 16); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("/dev/zero: %v after %v", err, time.Since(start))
	}
	// A .jsonl file is JSON lines; a BOM before text is not a token.
	src, err := LoadText(file("ok.jsonl", []byte(jsonl)), 1, 2, 16)
	if err != nil || src.Train[0] != 1169 { // "the"
		t.Fatalf(".jsonl: %v", err)
	}
	bom, err := LoadText(file("bom.txt", []byte("\xef\xbb\xbf"+text)), 1, 2, 16)
	if err != nil || bom.Train[0] != 1169 {
		t.Fatalf("BOM: %v %v", err, bom.Train[:2])
	}
}
