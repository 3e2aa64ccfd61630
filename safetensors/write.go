package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Marshal encodes tensors and metadata as a safetensors file.
func Marshal(tensors map[string]Tensor, metadata map[string]string) ([]byte, error) {
	header, order, err := prepare(tensors, metadata)
	if err != nil {
		return nil, err
	}
	out := header
	for _, name := range order {
		out = append(out, tensors[name].Data...)
	}
	return out, nil
}

// Write encodes tensors and metadata to w. Nothing is written if a tensor
// is invalid.
func Write(w io.Writer, tensors map[string]Tensor, metadata map[string]string) error {
	header, order, err := prepare(tensors, metadata)
	if err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	for _, name := range order {
		if _, err := w.Write(tensors[name].Data); err != nil {
			return err
		}
	}
	return nil
}

// testHookWriter lets tests make the temp-file writer of WriteFile fail.
var testHookWriter func(io.Writer) io.Writer

// WriteFile writes the file atomically: into a temp file in the same
// directory, synced, renamed over path, then the directory synced. A failed
// or interrupted save leaves the previous file as it was.
func WriteFile(path string, tensors map[string]Tensor, metadata map[string]string) (err error) {
	// Validate first so that a bad tensor costs no I/O.
	if _, _, err := prepare(tensors, metadata); err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return userPathError(path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = userPathError(path, err)
		}
	}()
	perm := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		perm = st.Mode().Perm()
	}
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	var w io.Writer = tmp
	if testHookWriter != nil {
		w = testHookWriter(w)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := Write(bw, tensors, metadata); err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// userPathError words a failure to write path without the temp file's name
// (the user asked for path, not for .path.tmp-123): the OS's reason alone.
func userPathError(path string, err error) error {
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("safetensors: writing %s: %w", path, pe.Err)
	case errors.As(err, &le):
		return fmt.Errorf("safetensors: writing %s: %w", path, le.Err)
	}
	return err
}

// prepare validates the tensors and builds the length-prefixed, padded
// header. Tensors are laid out as the reference does: by dtype in
// descending order of its Dtype enum (larger elements first, so every
// tensor stays aligned to its element size), then by name.
func prepare(tensors map[string]Tensor, metadata map[string]string) ([]byte, []string, error) {
	order := make([]string, 0, len(tensors))
	for name, t := range tensors {
		if name == metadataKey {
			return nil, nil, &Error{Tensor: name, Msg: "name is reserved for metadata"}
		}
		if !utf8.ValidString(name) {
			return nil, nil, &Error{Tensor: name, Msg: "name is not valid UTF-8"}
		}
		if err := t.check(); err != nil {
			return nil, nil, &Error{Tensor: name, Msg: err.Error()}
		}
		order = append(order, name)
	}
	sort.Slice(order, func(i, j int) bool {
		ri, rj := dtypeRank(tensors[order[i]].DType), dtypeRank(tensors[order[j]].DType)
		if ri != rj {
			return ri > rj
		}
		return order[i] < order[j]
	})

	// serde_json's compact form: __metadata__ first, then tensors in data order.
	h := []byte{'{'}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k, v := range metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, nil, &Error{Msg: fmt.Sprintf("metadata %q is not valid UTF-8", k)}
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		h = appendString(h, metadataKey)
		h = append(h, ":{"...)
		for i, k := range keys {
			if i > 0 {
				h = append(h, ',')
			}
			h = appendString(h, k)
			h = append(h, ':')
			h = appendString(h, metadata[k])
		}
		h = append(h, '}')
	}
	var off int
	for i, name := range order {
		t := tensors[name]
		if i > 0 || len(metadata) > 0 {
			h = append(h, ',')
		}
		h = appendString(h, name)
		h = append(h, `:{"dtype":`...)
		h = appendString(h, t.DType)
		h = append(h, `,"shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				h = append(h, ',')
			}
			h = strconv.AppendInt(h, int64(d), 10)
		}
		h = append(h, `],"data_offsets":[`...)
		h = strconv.AppendInt(h, int64(off), 10)
		off += len(t.Data)
		h = append(h, ',')
		h = strconv.AppendInt(h, int64(off), 10)
		h = append(h, "]}"...)
	}
	h = append(h, '}')
	for len(h)%8 != 0 { // pad with spaces so the data starts 8-byte aligned
		h = append(h, ' ')
	}
	if len(h) > MaxHeaderSize {
		return nil, nil, &Error{Msg: fmt.Sprintf("header of %d bytes exceeds the %d-byte limit", len(h), MaxHeaderSize)}
	}
	out := make([]byte, 8, 8+len(h))
	binary.LittleEndian.PutUint64(out, uint64(len(h)))
	return append(out, h...), order, nil
}

// appendString quotes s as serde_json does: only '"', '\\' and control
// characters are escaped (short forms where JSON has them, else \u00xx).
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
