package native

// Ring is a fixed-size ring buffer of ints.
type Ring struct {
	items []int
	head  int
	size  int
}

func NewRing(capacity int) *Ring {
	return &Ring{items: make([]int, capacity)}
}

func (r *Ring) Push(value int) {
	r.items[(r.head+r.size)%len(r.items)] = value
	if r.size < len(r.items) {
		r.size++
	} else {
		r.head = (r.head + 1) % len(r.items)
	}
}
