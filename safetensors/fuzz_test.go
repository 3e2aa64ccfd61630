package safetensors

import (
	"bytes"
	"testing"
)

// FuzzParse: Parse never panics, and whatever it accepts survives
// Marshal/Parse unchanged.
func FuzzParse(f *testing.F) {
	valid, _ := Marshal(map[string]Tensor{
		"a": {DType: "F32", Shape: []int{2}, Data: make([]byte, 8)},
		"b": {DType: "U8", Shape: []int{1, 3}, Data: []byte{1, 2, 3}},
	}, map[string]string{"k": "v"})
	f.Add(valid)
	f.Add(rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawFile(`{"__metadata__":null}`, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(b)
		if err != nil {
			return
		}
		out, err := Marshal(file.Tensors, file.Metadata)
		if err != nil {
			t.Fatalf("accepted file does not re-encode: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded file rejected: %v", err)
		}
		sameTensors(t, again.Tensors, file.Tensors)
		for k, v := range file.Metadata {
			if again.Metadata[k] != v {
				t.Fatalf("metadata %q changed", k)
			}
		}
		if out2, _ := Marshal(again.Tensors, again.Metadata); !bytes.Equal(out, out2) {
			t.Fatal("encoding is not stable")
		}
	})
}
