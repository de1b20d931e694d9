//! A pickle reader for what `torch.save` writes: plain Python values, the few callables torch
//! uses to rebuild tensors, and class references that are only named. Nothing is executed: a
//! global is resolved by its name against a fixed list (and the caller's list of classes that
//! may appear as values), and any other is refused, naming it.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of containers accepted (torch's own pickles nest a handful of levels).
const MAX_DEPTH: usize = 64;

pub type Shared<T> = Rc<RefCell<T>>;

/// A value of the pickle.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Shared<Vec<Value>>),
    Dict(Shared<Vec<(Value, Value)>>),
    /// `fractions.Fraction(numerator, denominator)`.
    Fraction(i64, i64),
    /// A class named as a value (`module.name`), from the caller's list.
    Class(String),
    /// A callable of the fixed list, before it is called.
    Callable(Callable),
    /// A storage record of the archive (`persistent_load`).
    Storage(Storage),
    Tensor(TensorRef),
    /// The stack marker (never a finished value).
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Callable {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Fraction,
    StorageType(Dtype),
}

/// The element types of torch's typed storages this reader turns into float tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F16,
    Bf16,
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub dtype: Dtype,
    /// The record's name in the archive's `data/` folder.
    pub key: String,
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view of a storage.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub storage: Storage,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Fraction(..) => "Fraction",
            Value::Class(_) => "class",
            Value::Callable(_) => "callable",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Mark => "mark",
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(v) => Some(v.clone()),
            Value::List(v) => Some(v.borrow().clone()),
            _ => None,
        }
    }

    /// The entry `key` of a dict with string keys.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// Containers nested below this value, up to `limit` (cycles count as too deep).
    fn depth(&self, limit: usize) -> usize {
        if limit == 0 {
            return 1;
        }
        let children: Vec<Value> = match self {
            Value::Tuple(v) => v.clone(),
            Value::List(v) => v.borrow().clone(),
            Value::Dict(d) => d.borrow().iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
            _ => return 0,
        };
        1 + children.iter().map(|c| c.depth(limit - 1)).max().unwrap_or(0)
    }
}

/// Which global a name stands for: the fixed list, then the caller's value-only classes.
fn resolve(module: &str, name: &str, classes: &[&str]) -> Result<Value, String> {
    let full = format!("{module}.{name}");
    let storage = |d| Ok(Value::Callable(Callable::StorageType(d)));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Value::Callable(Callable::OrderedDict)),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Value::Callable(Callable::RebuildTensor)),
        ("torch._utils", "_rebuild_parameter") => Ok(Value::Callable(Callable::RebuildParameter)),
        ("fractions", "Fraction") => Ok(Value::Callable(Callable::Fraction)),
        ("torch", "HalfStorage") => storage(Dtype::F16),
        ("torch", "BFloat16Storage") => storage(Dtype::Bf16),
        ("torch", "FloatStorage") => storage(Dtype::F32),
        ("torch", "DoubleStorage") => storage(Dtype::F64),
        ("torch", s) if s.ends_with("Storage") => Err(format!("the pickle holds a {full} (only float tensors are read)")),
        _ if classes.contains(&full.as_str()) => Ok(Value::Class(full)),
        _ => Err(format!("the pickle names {full}, which this reader does not know (refused; nothing in it is executed)")),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| format!("the pickle ends inside an argument at byte {}", self.at))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(v))
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("the pickle ends inside a GLOBAL name")?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| "a GLOBAL name that is not UTF-8")?;
        self.at += end + 1;
        Ok(s)
    }

    fn text(&mut self, n: u64) -> Result<String, String> {
        let n = usize::try_from(n).map_err(|_| "a string longer than memory")?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string that is not UTF-8".into())
    }
}

/// Unpickle `data`. `persistent` turns a persistent id into a value (torch's storages);
/// `classes` lists the `module.name` classes that may appear as values.
pub fn load(data: &[u8], classes: &[&str], persistent: impl Fn(Value) -> Result<Value, String>) -> Result<Value, String> {
    let mut r = Reader { data, at: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "the pickle pops an empty stack".to_string());
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let m = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or("the pickle closes a MARK it never opened")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    let checked = |v: Value| -> Result<Value, String> {
        if v.depth(MAX_DEPTH + 1) > MAX_DEPTH {
            Err(format!("containers nested deeper than {MAX_DEPTH} (or cyclic)"))
        } else {
            Ok(v)
        }
    };
    loop {
        let op_at = r.at;
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} (at most 5 is known)"));
                }
            }
            0x95 => {
                r.take(8)?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or("DUP on an empty stack")?;
                stack.push(top);
            }
            b'}' => stack.push(Value::Dict(Rc::default())),
            b']' => stack.push(Value::List(Rc::default())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(checked(Value::Tuple(items))?);
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err(format!("TUPLE{n} on a stack of {}", stack.len()));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(checked(Value::Tuple(items))?);
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(checked(Value::List(Rc::new(RefCell::new(items))))?);
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                let d = Value::Dict(Rc::default());
                set_items(&d, items)?;
                stack.push(checked(d)?);
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop(&mut stack)?] } else { pop_mark(&mut stack)? };
                let target = stack.last().ok_or("APPEND on an empty stack")?;
                match target {
                    Value::List(l) => l.borrow_mut().extend(items),
                    other => return Err(format!("APPEND to a {}", other.type_name())),
                }
                checked(target.clone())?;
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    vec![pop(&mut stack)?, v]
                } else {
                    pop_mark(&mut stack)?
                };
                let target = stack.last().ok_or("SETITEM on an empty stack")?;
                set_items(target, items)?;
                checked(target.clone())?;
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(i64::from(r.uint(4)? as u32 as i32))),
            b'K' => stack.push(Value::Int(r.uint(1)? as i64)),
            b'M' => stack.push(Value::Int(r.uint(2)? as i64)),
            0x8a | 0x8b => {
                let n = if op == 0x8a { r.uint(1)? } else { r.uint(4)? };
                if n > 8 {
                    return Err(format!("an integer of {n} bytes (more than 64 bits)"));
                }
                let bytes = r.take(n as usize)?;
                let mut v = [if bytes.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 8];
                v[..bytes.len()].copy_from_slice(bytes);
                stack.push(Value::Int(i64::from_le_bytes(v)));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(r.take(8)?.try_into().unwrap_or([0; 8])))),
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.uint(4)?,
                    0x8c => r.uint(1)?,
                    _ => r.uint(8)?,
                };
                stack.push(Value::Str(r.text(n)?));
            }
            b'T' | b'U' => {
                let n = if op == b'T' { r.uint(4)? } else { r.uint(1)? };
                stack.push(Value::Str(r.text(n)?));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => r.uint(4)?,
                    b'C' => r.uint(1)?,
                    _ => r.uint(8)?,
                };
                stack.push(Value::Bytes(r.take(usize::try_from(n).map_err(|_| "bytes longer than memory")?)?.to_vec()));
            }
            b'q' | b'r' => {
                let i = if op == b'q' { r.uint(1)? } else { r.uint(4)? };
                memo.insert(i, stack.last().cloned().ok_or("PUT on an empty stack")?);
            }
            0x94 => {
                let i = memo.len() as u64;
                memo.insert(i, stack.last().cloned().ok_or("MEMOIZE on an empty stack")?);
            }
            b'h' | b'j' => {
                let i = if op == b'h' { r.uint(1)? } else { r.uint(4)? };
                stack.push(memo.get(&i).cloned().ok_or_else(|| format!("GET of memo {i}, never stored"))?);
            }
            b'c' => {
                let (module, name) = (r.line()?.to_string(), r.line()?.to_string());
                stack.push(resolve(&module, &name, classes)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(resolve(&m, &n, classes)?),
                    _ => return Err("STACK_GLOBAL without two strings".into()),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(call(f, args)?);
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match (stack.last(), &state) {
                    // An OrderedDict's attributes (a state_dict's `_metadata`): not part of it.
                    (Some(Value::Dict(_)), Value::Dict(_) | Value::None) => {}
                    (Some(Value::Tensor(_)), Value::Tuple(_) | Value::Dict(_) | Value::None) => {}
                    (top, _) => return Err(format!("BUILD on a {}", top.map_or("nothing", Value::type_name))),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent(pid)?);
            }
            other => return Err(format!("pickle opcode 0x{other:02x} at byte {op_at} is not one torch.save writes (refused)")),
        }
    }
}

fn set_items(target: &Value, items: Vec<Value>) -> Result<(), String> {
    let Value::Dict(d) = target else {
        return Err(format!("SETITEMS on a {}", target.type_name()));
    };
    if !items.len().is_multiple_of(2) {
        return Err("SETITEMS with a key and no value".into());
    }
    let mut d = d.borrow_mut();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let Some(slot) = d.iter_mut().find(|(old, _)| matches!((old, &k), (Value::Str(a), Value::Str(b)) if a == b)) {
            slot.1 = v;
        } else {
            d.push((k, v));
        }
    }
    Ok(())
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(format!("{what}: expected an int, found a {}", other.type_name())),
    }
}

fn uints(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    let items = v.items().ok_or_else(|| format!("{what}: expected a tuple, found a {}", v.type_name()))?;
    items.iter().map(|i| u64::try_from(int(i, what)?).map_err(|_| format!("{what}: a negative value"))).collect()
}

/// One of the fixed callables applied to `args`.
fn call(f: Value, args: Value) -> Result<Value, String> {
    let Value::Callable(c) = f else {
        return Err(match f {
            Value::Class(name) => format!("the pickle constructs {name} (only named, never built, by this reader)"),
            other => format!("the pickle calls a {}", other.type_name()),
        });
    };
    let a = args.items().ok_or("REDUCE without an argument tuple")?;
    match c {
        Callable::OrderedDict if a.is_empty() => Ok(Value::Dict(Rc::default())),
        Callable::OrderedDict => Err("OrderedDict with arguments".into()),
        Callable::Fraction => {
            let (n, d) = match a.as_slice() {
                [Value::Int(n), Value::Int(d)] => (*n, *d),
                [Value::Int(n)] => (*n, 1),
                [Value::Str(s)] => {
                    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
                    (n.trim().parse().map_err(|_| format!("Fraction({s:?})"))?, d.trim().parse().map_err(|_| format!("Fraction({s:?})"))?)
                }
                _ => return Err(format!("Fraction with {} arguments", a.len())),
            };
            if d == 0 {
                return Err("Fraction with a zero denominator".into());
            }
            Ok(Value::Fraction(n, d))
        }
        Callable::RebuildParameter => match a.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Callable::RebuildTensor => {
            let [storage, offset, size, stride, ..] = a.as_slice() else {
                return Err(format!("_rebuild_tensor_v2 with {} arguments", a.len()));
            };
            let Value::Storage(storage) = storage else {
                return Err(format!("_rebuild_tensor_v2 of a {}, not a storage", storage.type_name()));
            };
            let (shape, stride) = (uints(size, "tensor size")?, uints(stride, "tensor stride")?);
            if shape.len() != stride.len() {
                return Err(format!("a tensor of size {shape:?} with strides {stride:?}"));
            }
            let offset = u64::try_from(int(offset, "storage offset")?).map_err(|_| "a negative storage offset")?;
            Ok(Value::Tensor(TensorRef { storage: storage.clone(), offset, shape, stride }))
        }
        Callable::StorageType(_) => Err("a storage type called as a function".into()),
    }
}

/// torch's `persistent_load`: `('storage', <type>, key, location, numel)` to a [`Storage`].
pub fn torch_storage(pid: Value) -> Result<Value, String> {
    let items = pid.items().ok_or("a persistent id that is not a tuple")?;
    match items.as_slice() {
        [Value::Str(tag), Value::Callable(Callable::StorageType(dtype)), Value::Str(key), _location, Value::Int(numel)] if tag == "storage" => {
            let numel = u64::try_from(*numel).map_err(|_| "a storage of negative size")?;
            Ok(Value::Storage(Storage { dtype: *dtype, key: key.clone(), numel }))
        }
        _ => Err(format!("a persistent id that is not a torch storage record ({} fields)", items.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pid(_: Value) -> Result<Value, String> {
        Err("no persistent ids here".into())
    }

    #[test]
    fn plain_values_and_known_callables() {
        // pickle.dumps({'a': [1, -2, 3.5, None, True], 'f': Fraction(39, 5), 'o': OrderedDict()}, protocol=2)
        let mut p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00fcfractions\nFraction\nq\x03K'K\x05\x86q\x04Rq\x05X\x01\x00\x00\x00occollections\nOrderedDict\n)Ru".to_vec();
        p.push(b'.');
        let v = load(&p, &[], no_pid).unwrap();
        let a = v.get("a").unwrap().items().unwrap();
        assert!(matches!(a.as_slice(), [Value::Int(1), Value::Int(-2), Value::Float(f), Value::None, Value::Bool(true)] if *f == 3.5));
        assert!(matches!(v.get("f"), Some(Value::Fraction(39, 5))));
        assert!(matches!(v.get("o"), Some(Value::Dict(_))));
    }

    #[test]
    fn unknown_globals_are_refused_by_name() {
        let e = load(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.", &[], no_pid).unwrap_err();
        assert!(e.contains("os.system") && e.contains("refused"), "{e}");
        // A class the caller allows is a value, never called.
        let v = load(b"\x80\x02cdemucs.htdemucs\nHTDemucs\n.", &["demucs.htdemucs.HTDemucs"], no_pid).unwrap();
        assert!(matches!(v, Value::Class(ref c) if c == "demucs.htdemucs.HTDemucs"));
        let e = load(b"\x80\x02cdemucs.htdemucs\nHTDemucs\n)R.", &["demucs.htdemucs.HTDemucs"], no_pid).unwrap_err();
        assert!(e.contains("never built"), "{e}");
    }

    #[test]
    fn malformed_pickles_are_errors_not_panics() {
        let e = load(b"\x80\x02]q\x00h\x00a.", &[], no_pid).unwrap_err();
        assert!(e.contains("cyclic"), "{e}");
        for bad in [&b""[..], b"\x80", b"X\xff\xff\xff\xff", b"h\x05.", b"t.", b"a.", b"\x80\x02\xfe.", b"\x8a\x09\x00"] {
            assert!(load(bad, &[], no_pid).is_err(), "{bad:?}");
        }
        // Nesting past the bound.
        let mut deep = b"\x80\x02N".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 200));
        deep.push(b'.');
        assert!(load(&deep, &[], no_pid).unwrap_err().contains("nested"));
    }
}
