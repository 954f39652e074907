package memory

// queue is a double-ended FIFO of entries backed by a ring buffer, so that
// a long backlog costs no allocation per message once it has grown.
type queue struct {
	buf        []*entry
	head, size int
}

func (q *queue) len() int { return q.size }

func (q *queue) grow() {
	if q.size < len(q.buf) {
		return
	}
	n := max(2*len(q.buf), 16)
	buf := make([]*entry, n)
	for i := range q.size {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

func (q *queue) push(e *entry) {
	q.grow()
	q.buf[(q.head+q.size)%len(q.buf)] = e
	q.size++
}

func (q *queue) pushFront(e *entry) {
	q.grow()
	q.head = (q.head - 1 + len(q.buf)) % len(q.buf)
	q.buf[q.head] = e
	q.size++
}

// pop removes and returns the head, or nil when the queue is empty.
func (q *queue) pop() *entry {
	if q.size == 0 {
		return nil
	}
	e := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.size--
	return e
}
