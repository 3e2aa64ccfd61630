package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Parse decodes a whole safetensors file held in memory. The Data of each
// tensor aliases b.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, &Error{Msg: fmt.Sprintf("file is %d bytes, shorter than the 8-byte header length", len(b))}
	}
	n, err := headerLen(binary.LittleEndian.Uint64(b), int64(len(b)))
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(b[8:8+n], int64(len(b)-8-n))
	if err != nil {
		return nil, err
	}
	return h.file(b[8+n:]), nil
}

// Read reads and validates a safetensors file. The header is checked before
// the data is read, so a corrupt header is refused without reading the rest.
func Read(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	named := func(err error) error {
		var e *Error
		if errors.As(err, &e) {
			e.File = path
		}
		return err
	}
	if !st.Mode().IsRegular() {
		// A device's size says nothing of what it holds (/dev/zero reads forever).
		return nil, named(&Error{Msg: "not a regular file"})
	}
	var prefix [8]byte
	if _, err := io.ReadFull(f, prefix[:]); err != nil {
		return nil, named(&Error{Msg: fmt.Sprintf("file is %d bytes, shorter than the 8-byte header length", size)})
	}
	n, err := headerLen(binary.LittleEndian.Uint64(prefix[:]), size)
	if err != nil {
		return nil, named(err)
	}
	header := make([]byte, n)
	if _, err := io.ReadFull(f, header); err != nil {
		return nil, fmt.Errorf("safetensors: %s: reading header: %w", path, err)
	}
	h, err := parseHeader(header, size-8-int64(n))
	if err != nil {
		return nil, named(err)
	}
	data := make([]byte, size-8-int64(n))
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("safetensors: %s: reading data: %w", path, err)
	}
	return h.file(data), nil
}

// headerLen checks the header length against the cap and the file size.
func headerLen(n uint64, size int64) (int, error) {
	if n > MaxHeaderSize {
		return 0, &Error{Msg: fmt.Sprintf("header length %d exceeds the %d-byte limit", n, MaxHeaderSize)}
	}
	if int64(n) > size-8 {
		return 0, &Error{Msg: fmt.Sprintf("header length %d is larger than the %d bytes after the length field", n, size-8)}
	}
	return int(n), nil
}

type entry struct {
	name       string
	dtype      string
	shape      []int
	begin, end int64
}

type header struct {
	entries  []entry // sorted by data offset
	metadata map[string]string
}

func (h *header) file(data []byte) *File {
	f := &File{Tensors: make(map[string]Tensor, len(h.entries)), Metadata: h.metadata}
	for _, e := range h.entries {
		f.Tensors[e.name] = Tensor{DType: e.dtype, Shape: e.shape, Data: data[e.begin:e.end:e.end]}
	}
	return f
}

// parseHeader decodes and validates the JSON header against a data section
// of dataLen bytes.
func parseHeader(b []byte, dataLen int64) (*header, error) {
	if !utf8.Valid(b) {
		return nil, &Error{Msg: "header is not valid UTF-8"}
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, &Error{Msg: "header is not a JSON object (does not start with '{')"}
	}
	h := &header{}
	err := eachKey(b, func(key string, val json.RawMessage) error {
		if key == metadataKey {
			m, err := parseMetadata(val)
			h.metadata = m
			return err
		}
		e, err := parseEntry(key, val)
		h.entries = append(h.entries, e)
		return err
	})
	var dup duplicateKey
	if errors.As(err, &dup) {
		return nil, &Error{Tensor: string(dup), Msg: "duplicate name in header"}
	}
	if err != nil {
		return nil, asError(err, "", "header")
	}
	return h, h.checkLayout(dataLen)
}

// asError turns a plain error into an *Error about tensor (if any).
func asError(err error, tensor, what string) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Tensor: tensor, Msg: what + ": " + err.Error()}
}

type duplicateKey string

func (d duplicateKey) Error() string { return fmt.Sprintf("duplicate key %q", string(d)) }

// eachKey walks a JSON object, refusing duplicate keys (which encoding/json
// would silently collapse) and anything but whitespace after it.
func eachKey(b []byte, fn func(key string, val json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		key := tok.(string) // the decoder only yields string keys inside an object
		if seen[key] {
			return duplicateKey(key)
		}
		seen[key] = true
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		if err := fn(key, val); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	// The reference pads the header with spaces; nothing else may follow.
	if len(bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n")) != 0 {
		return errors.New("content after the JSON object")
	}
	return nil
}

func parseMetadata(val json.RawMessage) (map[string]string, error) {
	m := map[string]string{}
	if string(val) == "null" {
		return m, nil
	}
	err := eachKey(val, func(k string, v json.RawMessage) error {
		var s string
		if v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return fmt.Errorf("value of %q is not a string", k)
		}
		m[k] = s
		return nil
	})
	if err != nil {
		return nil, &Error{Msg: "__metadata__: " + err.Error()}
	}
	return m, nil
}

func parseEntry(name string, val json.RawMessage) (entry, error) {
	e := entry{name: name}
	fail := func(format string, args ...any) (entry, error) {
		return e, &Error{Tensor: name, Msg: fmt.Sprintf(format, args...)}
	}
	var dtype, shape, offsets json.RawMessage
	err := eachKey(val, func(k string, v json.RawMessage) error {
		switch k {
		case "dtype":
			dtype = v
		case "shape":
			shape = v
		case "data_offsets":
			offsets = v
		default:
			return fmt.Errorf("unknown field %q", k)
		}
		return nil
	})
	if err != nil {
		return fail("%v", err)
	}
	if dtype == nil || shape == nil || offsets == nil {
		return fail("entry needs dtype, shape and data_offsets")
	}
	if dtype[0] != '"' || json.Unmarshal(dtype, &e.dtype) != nil {
		return fail("dtype %s is not a string", dtype)
	}
	if _, ok := DTypeSize(e.dtype); !ok {
		return fail("unknown dtype %q", e.dtype)
	}
	dims, err := intArray(shape)
	if err != nil {
		return fail("shape: %v", err)
	}
	e.shape = make([]int, len(dims))
	for i, d := range dims {
		if d < 0 {
			return fail("negative dimension %d in shape %v", d, dims)
		}
		e.shape[i] = int(d)
	}
	offs, err := intArray(offsets)
	if err != nil || len(offs) != 2 {
		return fail("data_offsets must be two integers, got %s", offsets)
	}
	e.begin, e.end = offs[0], offs[1]
	if e.begin < 0 || e.end < 0 {
		return fail("negative data_offsets [%d, %d]", e.begin, e.end)
	}
	if e.end < e.begin {
		return fail("data_offsets [%d, %d] are reversed", e.begin, e.end)
	}
	n, err := byteSize(e.dtype, e.shape)
	if err != nil {
		return fail("%v", err)
	}
	if int64(n) != e.end-e.begin {
		return fail("shape %v of %s needs %d bytes, data_offsets [%d, %d] give %d",
			e.shape, e.dtype, n, e.begin, e.end, e.end-e.begin)
	}
	return e, nil
}

// intArray decodes a JSON array of integers, refusing fractions and
// exponents as the reference's integer fields do.
func intArray(raw json.RawMessage) ([]int64, error) {
	var nums []json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if raw[0] != '[' || dec.Decode(&nums) != nil {
		return nil, fmt.Errorf("%s is not an array of integers", raw)
	}
	out := make([]int64, len(nums))
	for i, n := range nums {
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s is not an integer", n)
		}
		out[i] = v
	}
	return out, nil
}

// checkLayout requires the tensors to tile [0, dataLen) exactly, like the
// reference's validate plus its "incomplete buffer" check.
func (h *header) checkLayout(dataLen int64) error {
	sort.SliceStable(h.entries, func(i, j int) bool {
		a, b := h.entries[i], h.entries[j]
		return a.begin < b.begin || a.begin == b.begin && a.end < b.end
	})
	var pos int64
	for i, e := range h.entries {
		if e.end > dataLen {
			return &Error{Tensor: e.name, Msg: fmt.Sprintf("data_offsets [%d, %d] run past the %d-byte data section", e.begin, e.end, dataLen)}
		}
		switch {
		case e.begin < pos:
			prev := h.entries[i-1]
			return &Error{Tensor: e.name, Msg: fmt.Sprintf("data_offsets [%d, %d] overlap tensor %q [%d, %d]", e.begin, e.end, prev.name, prev.begin, prev.end)}
		case e.begin > pos:
			return &Error{Tensor: e.name, Msg: fmt.Sprintf("data_offsets [%d, %d] leave a hole: bytes [%d, %d) belong to no tensor", e.begin, e.end, pos, e.begin)}
		}
		pos = e.end
	}
	if pos != dataLen {
		return &Error{Msg: fmt.Sprintf("tensors cover %d bytes of the %d-byte data section; bytes [%d, %d) belong to no tensor", pos, dataLen, pos, dataLen)}
	}
	return nil
}
