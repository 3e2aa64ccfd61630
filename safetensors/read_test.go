package safetensors

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// rawFile assembles a file from a header string (unpadded) and data.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestParseValid(t *testing.T) {
	h := `{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"U8","shape":[0,3],"data_offsets":[16,16]},` +
		`"s":{"dtype":"I16","shape":[],"data_offsets":[16,18]}}    `
	data := []byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 7, 0}
	f, err := Parse(rawFile(h, data))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["format"] != "pt" || len(f.Tensors) != 4 {
		t.Fatalf("got %+v", f)
	}
	a, _ := f.Tensors["a"].Float32s()
	b, _ := f.Tensors["b"].Float32s()
	if a[0] != 1 || a[1] != 2 || b[0] != 3 || b[1] != 4 {
		t.Errorf("a %v b %v", a, b)
	}
	if e := f.Tensors["e"]; e.NumElements() != 0 || len(e.Data) != 0 {
		t.Errorf("empty tensor %+v", e)
	}
	if s, _ := f.Tensors["s"].Int32s(); len(s) != 1 || s[0] != 7 {
		t.Errorf("scalar %v", s)
	}
	if got := strings.Join(f.Names(), ","); got != "a,b,e,s" {
		t.Errorf("names %s", got)
	}
}

func TestParseRejects(t *testing.T) {
	f32x2 := func(name string, b, e int) string {
		return `"` + name + `":{"dtype":"F32","shape":[2],"data_offsets":[` + strconv.Itoa(b) + `,` + strconv.Itoa(e) + `]}`
	}
	cases := []struct {
		name   string
		file   []byte
		tensor string // the tensor the error must name, if any
		want   string
	}{
		{"short file", []byte{1, 2, 3}, "", "shorter than the 8-byte header length"},
		{"header past end", binary.LittleEndian.AppendUint64(nil, 100), "", "larger than the 0 bytes"},
		{"header too large", append(binary.LittleEndian.AppendUint64(nil, 200_000_000), make([]byte, 64)...), "", "exceeds the 100000000-byte limit"},
		{"not json", rawFile(`{not json}`, nil), "", "invalid JSON"},
		{"not an object", rawFile(`[1,2]   `, nil), "", "not a JSON object"},
		{"trailing content", rawFile(`{} x`, nil), "", "content after the JSON object"},
		{"bad utf8", rawFile("{\"\xff\":1}", nil), "", "not valid UTF-8"},
		{"unknown dtype", rawFile(`{"w":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "w", `unknown dtype "F31"`},
		{"size mismatch", rawFile(`{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}`, make([]byte, 12)), "w", "needs 16 bytes, data_offsets [0, 12] give 12"},
		{"past data", rawFile(`{`+f32x2("w", 0, 8)+`}`, make([]byte, 4)), "w", "run past the 4-byte data section"},
		{"reversed", rawFile(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}}`, make([]byte, 8)), "w", "reversed"},
		{"overlap", rawFile(`{`+f32x2("a", 0, 8)+`,`+f32x2("b", 4, 12)+`}`, make([]byte, 12)), "b", `overlap tensor "a" [0, 8]`},
		{"hole", rawFile(`{`+f32x2("a", 0, 8)+`,`+f32x2("b", 12, 20)+`}`, make([]byte, 20)), "b", "leave a hole: bytes [8, 12)"},
		{"hole at start", rawFile(`{`+f32x2("a", 4, 12)+`}`, make([]byte, 12)), "a", "leave a hole: bytes [0, 4)"},
		{"trailing data", rawFile(`{`+f32x2("a", 0, 8)+`}`, make([]byte, 10)), "", "cover 8 bytes of the 10-byte data section"},
		{"negative dim", rawFile(`{"w":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}}`, make([]byte, 8)), "w", "negative dimension -1"},
		{"fractional dim", rawFile(`{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, make([]byte, 8)), "w", "2.0 is not an integer"},
		{"huge dim", rawFile(`{"w":{"dtype":"F32","shape":[9223372036854775807,4],"data_offsets":[0,8]}}`, make([]byte, 8)), "w", "overflows"},
		{"duplicate name", rawFile(`{`+f32x2("a", 0, 8)+`,`+f32x2("a", 8, 16)+`}`, make([]byte, 16)), "a", "duplicate name"},
		{"duplicate field", rawFile(`{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "w", `duplicate key "dtype"`},
		{"unknown field", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, make([]byte, 8)), "w", `unknown field "x"`},
		{"missing field", rawFile(`{"w":{"dtype":"F32","shape":[2]}}`, make([]byte, 8)), "w", "needs dtype, shape and data_offsets"},
		{"three offsets", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}`, make([]byte, 8)), "w", "two integers"},
		{"negative offset", rawFile(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[-1,-1]}}`, nil), "w", "negative data_offsets"},
		{"entry not object", rawFile(`{"w":[1]}`, nil), "w", "not a JSON object"},
		{"metadata not string", rawFile(`{"__metadata__":{"k":1}}`, nil), "", `__metadata__: value of "k" is not a string`},
	}
	for _, c := range cases {
		_, err := Parse(c.file)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: error %v, want *Error", c.name, err)
			continue
		}
		if e.Tensor != c.tensor || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %q (tensor %q), want %q about tensor %q", c.name, err, e.Tensor, c.want, c.tensor)
		}
		if c.tensor != "" && !strings.Contains(err.Error(), `tensor "`+c.tensor+`"`) {
			t.Errorf("%s: message %q does not name the tensor", c.name, err)
		}
	}
}

func TestReadNamesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(path, rawFile(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), 0o644)
	_, err := Read(path)
	if err == nil || !strings.Contains(err.Error(), path+`: tensor "w": shape [3] of F32 needs 12 bytes`) {
		t.Errorf("error %v", err)
	}
	os.WriteFile(path, []byte{1, 2}, 0o644)
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), path+": file is 2 bytes") {
		t.Errorf("error %v", err)
	}
	if _, err := Read(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
