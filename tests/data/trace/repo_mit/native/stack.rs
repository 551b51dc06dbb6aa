pub struct MinStack {
    items: Vec<i64>,
    minimums: Vec<i64>,
}

impl MinStack {
    pub fn new() -> Self {
        MinStack { items: Vec::new(), minimums: Vec::new() }
    }

    pub fn push(&mut self, value: i64) {
        let smallest = match self.minimums.last() {
            Some(&m) if m < value => m,
            _ => value,
        };
        self.items.push(value);
        self.minimums.push(smallest);
    }
}
