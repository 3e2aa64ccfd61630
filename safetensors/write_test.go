package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// allDTypes builds one tensor of every dtype with random bytes.
func allDTypes(r *rand.Rand) map[string]Tensor {
	ts := map[string]Tensor{}
	for i, d := range dtypes {
		shape := []int{1 + i%3, 2}
		if i%4 == 0 {
			shape = []int{3}
		}
		n, _ := byteSize(d.name, shape)
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(r.UintN(256))
		}
		ts["t_"+strings.ToLower(d.name)] = Tensor{DType: d.name, Shape: shape, Data: data}
	}
	ts["scalar"] = Tensor{DType: "F32", Shape: []int{}, Data: []byte{0, 0, 128, 63}}
	ts["empty"] = Tensor{DType: "BF16", Shape: []int{0, 5}, Data: []byte{}}
	return ts
}

func sameTensors(t *testing.T, got, want map[string]Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d tensors, want %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok || g.DType != w.DType || !reflect.DeepEqual(append([]int{}, g.Shape...), append([]int{}, w.Shape...)) || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("tensor %q: got %s %v %d bytes, want %s %v %d bytes", name, g.DType, g.Shape, len(g.Data), w.DType, w.Shape, len(w.Data))
		}
	}
}

func TestRoundTripAllDTypes(t *testing.T) {
	ts := allDTypes(rand.New(rand.NewPCG(1, 2)))
	meta := map[string]string{"format": "pt", "quote\"\n": "ünï\tcode\x01"}
	b, err := Marshal(ts, meta)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f.Tensors, ts)
	if !reflect.DeepEqual(f.Metadata, meta) {
		t.Errorf("metadata %v", f.Metadata)
	}
	var buf bytes.Buffer
	if err := Write(&buf, ts, meta); err != nil || !bytes.Equal(buf.Bytes(), b) {
		t.Errorf("Write differs from Marshal (%v)", err)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteFile(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	f2, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f2.Tensors, ts)
}

func TestDeterministicLayout(t *testing.T) {
	ts := allDTypes(rand.New(rand.NewPCG(3, 4)))
	first, _ := Marshal(ts, map[string]string{"b": "2", "a": "1"})
	for i := 0; i < 20; i++ {
		again, _ := Marshal(ts, map[string]string{"a": "1", "b": "2"})
		if !bytes.Equal(first, again) {
			t.Fatal("output depends on map order")
		}
	}
	n := int(first[0]) | int(first[1])<<8 | int(first[2])<<16
	if (8+n)%8 != 0 || !strings.HasPrefix(string(first[8:]), `{"__metadata__":{"a":"1","b":"2"},"t_u64":`) {
		t.Errorf("header %q", first[8:8+n])
	}
	// Larger dtypes first, so each tensor is aligned to its element size.
	var h map[string]struct {
		DType       string
		DataOffsets [2]int `json:"data_offsets"`
	}
	if err := json.Unmarshal(first[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	for name, e := range h {
		size, _ := DTypeSize(e.DType)
		if off := 8 + n + e.DataOffsets[0]; name != metadataKey && off%size != 0 {
			t.Errorf("tensor %q (%s) at file offset %d", name, e.DType, off)
		}
	}
}

// The exact bytes the reference writes for these tensors: sorted by
// descending dtype (I64 > F32 > BF16 > U8, the order of its Dtype enum),
// then by name; serde_json's compact form; spaces up to a multiple of 8.
func TestReferenceBytes(t *testing.T) {
	ts := map[string]Tensor{
		"z":      {DType: "U8", Shape: []int{1}, Data: []byte{9}},
		"attn.1": {DType: "F32", Shape: []int{1}, Data: []byte{0, 0, 128, 63}},
		"attn.0": {DType: "F32", Shape: []int{1, 1}, Data: []byte{0, 0, 0, 64}},
		"h":      {DType: "BF16", Shape: []int{1}, Data: []byte{128, 63}},
		"i":      {DType: "I64", Shape: []int{}, Data: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
	}
	header := `{"i":{"dtype":"I64","shape":[],"data_offsets":[0,8]},` +
		`"attn.0":{"dtype":"F32","shape":[1,1],"data_offsets":[8,12]},` +
		`"attn.1":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},` +
		`"h":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},` +
		`"z":{"dtype":"U8","shape":[1],"data_offsets":[18,19]}}`
	header += strings.Repeat(" ", (8-len(header)%8)%8)
	want := rawFile(header, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 128, 63, 128, 63, 9})
	got, err := Marshal(ts, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q (%v)", got, want, err)
	}
}

func TestWriteRejects(t *testing.T) {
	cases := map[string]Tensor{
		"short data":    {DType: "F32", Shape: []int{2}, Data: make([]byte, 7)},
		"bad dtype":     {DType: "F4", Shape: []int{2}, Data: make([]byte, 1)},
		"negative dim":  {DType: "F32", Shape: []int{-2}, Data: nil},
		"__metadata__":  {DType: "U8", Shape: []int{0}, Data: nil},
		"bad utf8 \xff": {DType: "U8", Shape: []int{0}, Data: nil},
	}
	for name, tn := range cases {
		_, err := Marshal(map[string]Tensor{name: tn}, nil)
		var e *Error
		if !errors.As(err, &e) || e.Tensor != name {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

// failAfter fails once n bytes have been written.
type failAfter struct {
	w io.Writer
	n int
}

var errDisk = errors.New("disk on fire")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k, _ := f.w.Write(p[:f.n])
		f.n = 0
		return k, errDisk
	}
	f.n -= len(p)
	return f.w.Write(p)
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt.safetensors")
	old := map[string]Tensor{"w": {DType: "F32", Shape: []int{1}, Data: []byte{1, 2, 3, 4}}}
	if err := WriteFile(path, old, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	oldBytes, _ := os.ReadFile(path)
	big := map[string]Tensor{"w": {DType: "U8", Shape: []int{1 << 21}, Data: make([]byte, 1<<21)}}

	// A write that fails halfway through the data.
	testHookWriter = func(w io.Writer) io.Writer { return &failAfter{w: w, n: 1 << 20} }
	err := WriteFile(path, big, nil)
	testHookWriter = nil
	if !errors.Is(err, errDisk) {
		t.Fatalf("error %v, want the writer's", err)
	}
	// An invalid tensor: refused before any I/O.
	if err := WriteFile(path, map[string]Tensor{"w": {DType: "F32", Shape: []int{2}}}, nil); err == nil {
		t.Fatal("invalid tensor written")
	}
	// A directory in the way of the rename.
	if err := WriteFile(dir, old, nil); err == nil {
		t.Fatal("rename over a directory succeeded")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, oldBytes) {
		t.Fatal("previous file changed by a failed save")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only the checkpoint", names)
	}

	if err := WriteFile(path, big, nil); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the previous file's 0600", st.Mode().Perm())
	}
	f, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f.Tensors, big)
}
