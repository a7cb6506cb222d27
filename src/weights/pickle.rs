//! A strict pickle reader for PyTorch checkpoints that never executes anything.
//!
//! Python's pickle format is a small stack machine whose `GLOBAL` + `REDUCE` opcodes call
//! arbitrary functions; loading an untrusted `.pt` file with `pickle` runs whatever it names.
//! This reader implements the data opcodes of protocols 2–5 that `torch.save` emits and
//! resolves every global through an allowlist (`rebuild::resolve_global`): the few torch
//! functions that rebuild tensors are *interpreted* (they produce a `TensorRef` describing a
//! view of a storage), and any other global fails the load with an error naming it.
//!
//! Hostile input is bounded: every length is checked against the bytes that remain, the
//! number of values the program creates is capped (so memory stays proportional to a fixed
//! budget, not to lengths written in the file), and containers live in a flat `Heap` so
//! no value is recursive in Rust (dropping or cloning never recurses; walkers bound their own
//! depth with `MAX_DEPTH`). `serde-pickle` is not used because it cannot resolve persistent
//! IDs, which is how torch refers to tensor storages.

use super::rebuild::{self, Global, StorageRef, StorageTable, TensorRef};
use std::collections::HashMap;
use std::rc::Rc;

/// The most values one pickle may create (each push onto the stack counts): far above any
/// checkpoint's pickle (a few values per tensor), far below what would exhaust memory.
const MAX_VALUES: usize = 1 << 22;
/// Deepest container nesting a walker follows; checkpoints nest a handful of levels.
pub(super) const MAX_DEPTH: usize = 64;

/// Index of a container in the `Heap`.
pub(super) type ObjId = usize;

/// A pickled value. Containers are heap indices, so clones are O(1) and cycles are harmless.
#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(ObjId),
    List(ObjId),
    Dict(ObjId),
    /// An allowlisted global (a rebuild function, a storage type, a dtype).
    Global(Global),
    /// A storage reference made by `BINPERSID`.
    Storage(Rc<StorageRef>),
    /// A tensor made by one of torch's rebuild functions.
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// A short description for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::BigInt(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a global",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// A container's contents.
#[derive(Debug)]
pub(super) enum Object {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Entries in insertion order (what Python's `dict` and `OrderedDict` iterate in).
    Dict(Vec<(Value, Value)>),
}

/// Every container made while reading, addressed by `ObjId`.
#[derive(Debug, Default)]
pub(super) struct Heap(Vec<Object>);

impl Heap {
    fn alloc(&mut self, o: Object) -> ObjId {
        self.0.push(o);
        self.0.len() - 1
    }

    pub(super) fn get(&self, id: ObjId) -> &Object {
        &self.0[id]
    }

    /// The elements of a tuple value, or `None` if it is not a tuple.
    pub(super) fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Tuple(id) => match self.get(*id) {
                Object::Tuple(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether `v` is an empty dict (how torch pickles "no hooks" and "no metadata").
    pub(super) fn is_empty_dict(&self, v: &Value) -> bool {
        matches!(v, Value::Dict(id) if matches!(self.get(*id), Object::Dict(e) if e.is_empty()))
    }
}

/// Reads one pickle after another from a byte slice, sharing the heap and storage table.
pub(super) struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    heap: Heap,
    storages: StorageTable,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    created: usize,
}

type Res<T> = Result<T, String>;

impl<'a> Unpickler<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            heap: Heap::default(),
            storages: StorageTable::default(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            created: 0,
        }
    }

    /// Byte offset just past the last pickle read.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    pub(super) fn heap(&self) -> &Heap {
        &self.heap
    }

    pub(super) fn storages(&self) -> &StorageTable {
        &self.storages
    }

    /// Runs one pickle program up to its `STOP` and returns its value.
    pub(super) fn load(&mut self) -> Res<Value> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        self.created = 0;
        loop {
            let at = self.pos;
            let op = self.byte()?;
            if op == b'.' {
                return self.pop();
            }
            self.step(op)
                .map_err(|e| format!("pickle byte {at}: {e}"))?;
        }
    }

    /// Executes one opcode (everything but `STOP`).
    fn step(&mut self, op: u8) -> Res<()> {
        match op {
            0x80 => {
                let proto = self.byte()?;
                if !(2..=5).contains(&proto) {
                    return Err(format!("pickle protocol {proto} is not supported (2 to 5)"));
                }
            }
            0x95 => {
                // FRAME: a length prefix for buffered reading; the data follows inline.
                let len = self.u64()?;
                if len > (self.data.len() - self.pos) as u64 {
                    return Err(format!("frame of {len} bytes runs past the end"));
                }
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.pop_mark()?;
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.stack.last().cloned().ok_or("DUP on an empty stack")?;
                self.push(top)?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(v.into()))?;
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Value::Int(v.into()))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(v.into()))?;
            }
            0x8a => {
                let n = self.byte()? as usize;
                let v = self.long(n)?;
                self.push(v)?;
            }
            0x8b => {
                let n = self.len4()?;
                let v = self.long(n)?;
                self.push(v)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v))?;
            }
            b'X' => {
                let n = self.len4()?;
                self.push_str(n)?;
            }
            0x8c => {
                let n = self.byte()? as usize;
                self.push_str(n)?;
            }
            0x8d => {
                let n = self.len8()?;
                self.push_str(n)?;
            }
            // Python 2 byte strings (old legacy files); torch's own loader decodes them as text.
            b'T' => {
                let n = self.len4()?;
                self.push_str(n)?;
            }
            b'U' => {
                let n = self.byte()? as usize;
                self.push_str(n)?;
            }
            b'B' => {
                let n = self.len4()?;
                self.push_bytes(n)?;
            }
            b'C' => {
                let n = self.byte()? as usize;
                self.push_bytes(n)?;
            }
            0x8e => {
                let n = self.len8()?;
                self.push_bytes(n)?;
            }
            b')' => self.push_obj(Object::Tuple(Vec::new()), Value::Tuple)?,
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let items = self.pop_n(n)?;
                self.push_obj(Object::Tuple(items), Value::Tuple)?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Object::Tuple(items), Value::Tuple)?;
            }
            b']' => self.push_obj(Object::List(Vec::new()), Value::List)?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push_obj(Object::List(items), Value::List)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b'}' => self.push_obj(Object::Dict(Vec::new()), Value::Dict)?,
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.push_obj(Object::Dict(pairs), Value::Dict)?;
            }
            b's' => {
                let items = self.pop_n(2)?;
                self.extend_dict(pairs(items)?)?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend_dict(pairs(items)?)?;
            }
            b'q' => {
                let i = self.byte()?;
                self.memo_put(i.into())?;
            }
            b'r' => {
                let i = u32::from_le_bytes(self.array()?);
                self.memo_put(i)?;
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo is full")?;
                self.memo_put(i)?;
            }
            b'h' => {
                let i = self.byte()?;
                self.memo_get(i.into())?;
            }
            b'j' => {
                let i = u32::from_le_bytes(self.array()?);
                self.memo_get(i)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = rebuild::resolve_global(&module, &name)?;
                self.push(Value::Global(g))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                let g = rebuild::resolve_global(module, name)?;
                self.push(Value::Global(g))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.call(&callable, &args)?;
                self.push(v)?;
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let callable = self.pop()?;
                if !self.heap.is_empty_dict(&kwargs) {
                    return Err("NEWOBJ_EX with keyword arguments is not supported".into());
                }
                let v = self.call(&callable, &args)?;
                self.push(v)?;
            }
            b'b' => {
                // BUILD sets an object's state. The only allowlisted object that gets one is
                // `OrderedDict` (a state_dict's `_metadata` attribute), which we drop.
                let _state = self.pop()?;
                match self.stack.last() {
                    Some(Value::Dict(_)) => {}
                    Some(other) => {
                        return Err(format!("BUILD on {} is not supported", other.kind()))
                    }
                    None => return Err("BUILD on an empty stack".into()),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.storages.persistent_load(&self.heap, &pid)?;
                self.push(Value::Storage(storage))?;
            }
            0x8f..=0x91 => {
                return Err("sets are not supported in tensor files (found a set opcode)".into())
            }
            0x82..=0x84 => {
                // The copyreg extension registry maps codes to arbitrary globals.
                return Err("extension-registry opcodes (EXT1/2/4) are not supported".into());
            }
            0x96..=0x98 => {
                return Err("out-of-band buffers (pickle protocol 5) are not supported".into())
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} ({:?}); torch.save writes \
                     protocols 2 to 5, text protocols 0 and 1 are not read",
                    other as char
                ))
            }
        }
        Ok(())
    }

    /// REDUCE / NEWOBJ: interprets a call to an allowlisted global.
    fn call(&mut self, callable: &Value, args: &Value) -> Res<Value> {
        let Value::Global(g) = callable else {
            return Err(format!("cannot call {}", callable.kind()));
        };
        let args = self
            .heap
            .tuple(args)
            .ok_or_else(|| format!("arguments of {g} are {}, not a tuple", args.kind()))?
            .to_vec();
        match g {
            Global::OrderedDict if args.is_empty() => {
                Ok(Value::Dict(self.heap.alloc(Object::Dict(Vec::new()))))
            }
            _ => rebuild::call(g, &args, &self.heap),
        }
    }

    fn push(&mut self, v: Value) -> Res<()> {
        self.created += 1;
        if self.created > MAX_VALUES {
            return Err(format!("the pickle creates more than {MAX_VALUES} values"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn push_obj(&mut self, o: Object, wrap: fn(ObjId) -> Value) -> Res<()> {
        let id = self.heap.alloc(o);
        self.push(wrap(id))
    }

    fn push_str(&mut self, n: usize) -> Res<()> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|e| format!("string is not UTF-8: {e}"))?;
        self.push(Value::Str(s.into()))
    }

    fn push_bytes(&mut self, n: usize) -> Res<()> {
        let bytes = self.take(n)?;
        self.push(Value::Bytes(bytes.into()))
    }

    fn pop(&mut self) -> Res<Value> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err("a value is missing after MARK".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn pop_n(&mut self, n: usize) -> Res<Vec<Value>> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(mark))
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Res<()> {
        match self.stack.last() {
            Some(Value::List(id)) => match &mut self.heap.0[*id] {
                Object::List(v) => {
                    v.extend(items);
                    Ok(())
                }
                _ => Err("corrupt heap".into()),
            },
            other => Err(format!(
                "APPEND needs a list, found {}",
                other.map_or("nothing", Value::kind)
            )),
        }
    }

    fn extend_dict(&mut self, items: Vec<(Value, Value)>) -> Res<()> {
        match self.stack.last() {
            Some(Value::Dict(id)) => match &mut self.heap.0[*id] {
                Object::Dict(v) => {
                    v.extend(items);
                    Ok(())
                }
                _ => Err("corrupt heap".into()),
            },
            other => Err(format!(
                "SETITEM needs a dict, found {}",
                other.map_or("nothing", Value::kind)
            )),
        }
    }

    fn memo_put(&mut self, i: u32) -> Res<()> {
        let top = self.stack.last().cloned().ok_or("PUT on an empty stack")?;
        if self.memo.len() >= MAX_VALUES && !self.memo.contains_key(&i) {
            return Err(format!("the memo holds more than {MAX_VALUES} values"));
        }
        self.memo.insert(i, top);
        Ok(())
    }

    fn memo_get(&mut self, i: u32) -> Res<()> {
        let v = self
            .memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo entry {i} is read before it is written"))?;
        self.push(v)
    }

    /// LONG1/LONG4: little-endian two's complement of `n` bytes.
    fn long(&mut self, n: usize) -> Res<Value> {
        let bytes = self.take(n)?;
        if n > 8 {
            return Ok(Value::BigInt(bytes.into()));
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut le = [fill; 8];
        le[..n].copy_from_slice(bytes);
        Ok(Value::Int(i64::from_le_bytes(le)))
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "needs {n} bytes but only {} remain (truncated or corrupt pickle)",
                    self.data.len() - self.pos
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A 4-byte length (signed in the format; negative ones are corrupt).
    fn len4(&mut self) -> Res<usize> {
        let n = i32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    fn len8(&mut self) -> Res<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| format!("length {n} does not fit in memory"))
    }

    /// A newline-terminated ASCII line (the operands of GLOBAL).
    fn line(&mut self) -> Res<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated GLOBAL name")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s.to_string())
    }
}

/// Pairs up `[k0, v0, k1, v1, ...]`.
fn pairs(items: Vec<Value>) -> Res<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python-like text of a value, for comparing whole structures.
    fn repr(heap: &Heap, v: &Value) -> String {
        let join = |items: &[Value]| {
            items
                .iter()
                .map(|x| repr(heap, x))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::BigInt(b) => format!("big{:02x?}", &b[..]),
            Value::Float(f) => format!("{f:?}"),
            Value::Str(s) => format!("'{s}'"),
            Value::Bytes(b) => format!("b{:?}", &b[..]),
            Value::Tuple(id) | Value::List(id) | Value::Dict(id) => match heap.get(*id) {
                Object::Tuple(items) => format!("({})", join(items)),
                Object::List(items) => format!("[{}]", join(items)),
                Object::Dict(entries) => format!(
                    "{{{}}}",
                    entries
                        .iter()
                        .map(|(k, x)| format!("{}: {}", repr(heap, k), repr(heap, x)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            other => other.kind().into(),
        }
    }

    fn load(bytes: &[u8]) -> Result<String, String> {
        let mut vm = Unpickler::new(bytes);
        let v = vm.load()?;
        Ok(repr(vm.heap(), &v))
    }

    /// `{'a': 1, 'b': [1.5, None, True], 'c': (-2, 'é', 2**40, -2**70)}`
    const EXPECTED: &str =
        "{'a': 1, 'b': [1.5, None, True], 'c': (-2, 'é', 1099511627776, big[00, 00, 00, 00, 00, 00, 00, 00, c0])}";

    #[test]
    fn reads_protocol_2_as_python_writes_it() {
        // pickle.dumps(EXPECTED's value, protocol=2)
        let p2 = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G?\xf8\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00cq\x04(J\xfe\xff\xff\xffX\x02\x00\x00\x00\xc3\xa9q\x05\x8a\x06\x00\x00\x00\x00\x00\x01\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00\xc0tq\x06u.";
        assert_eq!(load(p2).unwrap(), EXPECTED);
    }

    #[test]
    fn reads_protocol_4_frames_and_memoize() {
        // pickle.dumps(same value, protocol=4)
        let p4 = b"\x80\x04\x95B\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01\x8c\x01b\x94]\x94(G?\xf8\x00\x00\x00\x00\x00\x00N\x88e\x8c\x01c\x94(J\xfe\xff\xff\xff\x8c\x02\xc3\xa9\x94\x8a\x06\x00\x00\x00\x00\x00\x01\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00\xc0t\x94u.";
        assert_eq!(load(p4).unwrap(), EXPECTED);
    }

    #[test]
    fn memo_gets_share_the_container() {
        // l = []; pickle.dumps({'x': l, 'y': l}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00xq\x01]q\x02X\x01\x00\x00\x00yq\x03h\x02u.";
        let mut vm = Unpickler::new(p);
        let v = vm.load().unwrap();
        let Value::Dict(id) = v else { panic!("{v:?}") };
        let Object::Dict(entries) = vm.heap().get(id) else {
            panic!()
        };
        let ids: Vec<_> = entries
            .iter()
            .map(|(_, v)| match v {
                Value::List(id) => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids[0], ids[1]);
    }

    #[test]
    fn globals_outside_the_allowlist_are_refused_by_name() {
        // GLOBAL 'os system' (protocol 2) and STACK_GLOBAL 'builtins' 'eval' (protocol 4).
        let err = load(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap_err();
        assert!(
            err.contains("`os.system`") && err.contains("state_dict()"),
            "{err}"
        );
        let err = load(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err();
        assert!(err.contains("`builtins.eval`"), "{err}");
        let err = load(b"\x80\x02ctorch.nn.modules.linear\nLinear\n.").unwrap_err();
        assert!(err.contains("`torch.nn.modules.linear.Linear`"), "{err}");
    }

    #[test]
    fn lengths_beyond_the_input_are_refused_before_allocating() {
        for p in [
            &b"\x80\x02X\xff\xff\xff\x7fab."[..], // BINUNICODE 2 GiB
            b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xffab.", // BINUNICODE8 2^64-1
            b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7f.", // FRAME past the end
            b"\x80\x02\x8b\xff\xff\xff\x7f\x00.", // LONG4 2 GiB
        ] {
            let err = load(p).unwrap_err();
            assert!(
                err.contains("remain") || err.contains("past the end"),
                "{err}"
            );
        }
        let err = load(b"\x80\x02X\xff\xff\xff\xffab.").unwrap_err();
        assert!(err.contains("negative length"), "{err}");
    }

    #[test]
    fn malformed_programs_are_errors() {
        let cases: [(&[u8], &str); 7] = [
            (b"\x80\x02I1\n.", "unsupported pickle opcode 0x49"), // protocol-0 INT
            (b"\x80\x07N.", "protocol 7"),
            (b"\x80\x02N", "remain"),           // no STOP
            (b"\x80\x02a.", "stack underflow"), // APPEND with nothing
            (b"\x80\x02NNa.", "APPEND needs a list"),
            (b"\x80\x02h\x05.", "memo entry 5"),
            (b"\x80\x02\x8f.", "sets are not supported"),
        ];
        for (p, want) in cases {
            let err = load(p).unwrap_err();
            assert!(err.contains(want), "{p:?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_builds_without_recursion() {
        // 100 000 nested lists: [[[...]]]. Building, cloning and dropping must not recurse
        // (walkers bound the depth they follow, see `torch`).
        let n = 100_000;
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let mut vm = Unpickler::new(&p);
        assert!(matches!(vm.load().unwrap(), Value::List(0)));
    }
}
