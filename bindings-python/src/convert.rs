//! CLIXML values to Python objects and back.
//!
//! Objects are built in one pass per message with the classes of `psremote.values`; shared
//! objects (`<Ref>`) become the same Python object. Output SecureStrings are decrypted with the
//! pool's session key into `psremote.SecureString`, whose repr never shows the value.

use std::collections::HashMap;
use std::sync::Arc;

use psremote::clixml::{Container, PsObject, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// Python classes used by the conversion, imported once.
struct Classes {
    ps_object: Py<PyAny>,
    ps_enum: Py<PyAny>,
    secure_string: Py<PyAny>,
    credential: Py<PyAny>,
    decimal: Py<PyAny>,
    uuid: Py<PyAny>,
    datetime: Py<PyAny>,
    timedelta: Py<PyAny>,
    timezone: Py<PyAny>,
    utc: Py<PyAny>,
    dataclasses_fields: Py<PyAny>,
    is_dataclass: Py<PyAny>,
    gc_isenabled: Py<PyAny>,
    gc_disable: Py<PyAny>,
    gc_enable: Py<PyAny>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let values = py.import("psremote.values")?;
        let dt = py.import("datetime")?;
        let dc = py.import("dataclasses")?;
        let gc = py.import("gc")?;
        let timezone = dt.getattr("timezone")?;
        Ok(Classes {
            ps_object: values.getattr("PSObject")?.unbind(),
            ps_enum: values.getattr("PSEnum")?.unbind(),
            secure_string: values.getattr("SecureString")?.unbind(),
            credential: values.getattr("PSCredential")?.unbind(),
            decimal: py.import("decimal")?.getattr("Decimal")?.unbind(),
            uuid: py.import("uuid")?.getattr("UUID")?.unbind(),
            datetime: dt.getattr("datetime")?.unbind(),
            timedelta: dt.getattr("timedelta")?.unbind(),
            utc: timezone.getattr("utc")?.unbind(),
            timezone: timezone.unbind(),
            dataclasses_fields: dc.getattr("fields")?.unbind(),
            is_dataclass: dc.getattr("is_dataclass")?.unbind(),
            gc_isenabled: gc.getattr("isenabled")?.unbind(),
            gc_disable: gc.getattr("disable")?.unbind(),
            gc_enable: gc.getattr("enable")?.unbind(),
        })
    })
}

/// Why a value could not be converted.
#[derive(Debug)]
pub enum ConvertError {
    /// A SecureString needs the session key, which has not been exchanged yet.
    NeedKey,
    /// Anything else.
    Py(PyErr),
}

impl From<PyErr> for ConvertError {
    fn from(e: PyErr) -> Self {
        ConvertError::Py(e)
    }
}

impl From<std::convert::Infallible> for ConvertError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl ConvertError {
    pub fn into_py(self) -> PyErr {
        match self {
            ConvertError::NeedKey => PyValueError::new_err("a SecureString needs the session key; exchange it first"),
            ConvertError::Py(e) => e,
        }
    }
}

/// Secret handling for one conversion: SecureStrings are decrypted or encrypted with this.
pub trait Keys {
    fn decrypt(&self, ciphertext: &[u8]) -> Option<zeroize::Zeroizing<String>>;
    fn encrypt(&self, plaintext: &str) -> Option<Value>;
}

/// No session key: SecureStrings cannot be converted.
pub struct NoKeys;

impl Keys for NoKeys {
    fn decrypt(&self, _: &[u8]) -> Option<zeroize::Zeroizing<String>> {
        None
    }
    fn encrypt(&self, _: &str) -> Option<Value> {
        None
    }
}

impl Keys for psremote::client::RunspacePool {
    fn decrypt(&self, ciphertext: &[u8]) -> Option<zeroize::Zeroizing<String>> {
        self.decrypt_secure_string(ciphertext).ok()
    }
    fn encrypt(&self, plaintext: &str) -> Option<Value> {
        self.secure_string_now(plaintext).ok()
    }
}

/// `clixml_loads(data)`: one CLIXML value (a PSRP message's data; a UTF-8 BOM is allowed) as the
/// Python values a pipeline's output gives, with the core's default limits. Parsing runs without the
/// GIL. Malformed CLIXML, or a SecureString (it needs a pool's session key), is a ValueError.
#[pyfunction]
pub fn clixml_loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let value = py
        .detach(|| psremote::clixml::from_bytes(data, &psremote::clixml::Limits::default()))
        .map_err(|e| PyValueError::new_err(format!("invalid CLIXML: {e}")))?;
    let _gc = GcPause::new(py, data.len() >= GC_PAUSE_BYTES)?;
    to_py(py, &value, &NoKeys).map_err(ConvertError::into_py)
}

/// Converts a value to Python.
pub fn to_py<'py>(py: Python<'py>, v: &Value, keys: &dyn Keys) -> Result<Bound<'py, PyAny>, ConvertError> {
    ToPy::new(py, keys)?.convert(v)
}

/// CLIXML of at least this size is converted with Python's cyclic garbage collector paused.
const GC_PAUSE_BYTES: usize = 64 * 1024;

/// Pauses Python's cyclic garbage collector while a large result is built, if it was enabled.
///
/// Building thousands of objects at once otherwise triggers collection after collection, each
/// walking the young objects just made (a sixth of the conversion's time for a list of 10,000
/// objects); afterwards the collector runs as usual. The GIL is held throughout, so only Python
/// code called during the conversion (a few constructors) runs while it is paused.
pub struct GcPause<'py> {
    py: Python<'py>,
    paused: bool,
}

impl<'py> GcPause<'py> {
    pub fn new(py: Python<'py>, wanted: bool) -> PyResult<Self> {
        let mut paused = false;
        if wanted {
            let c = classes(py)?;
            if c.gc_isenabled.bind(py).call0()?.is_truthy()? {
                c.gc_disable.bind(py).call0()?;
                paused = true;
            }
        }
        Ok(GcPause { py, paused })
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if self.paused
            && let Ok(c) = classes(self.py)
            && let Err(e) = c.gc_enable.bind(self.py).call0()
        {
            e.restore(self.py);
        }
    }
}

/// Converts values to Python, remembering across the values of one batch (a message, the events
/// of one `next_events`) the Python strings of property and type names and the time zones made, so
/// a list of objects of one shape shares its name strings. `<Ref>`s are resolved per value.
pub struct ToPy<'py, 'v, 'k> {
    py: Python<'py>,
    c: &'py Classes,
    keys: &'k dyn Keys,
    names: HashMap<&'v str, Bound<'py, PyString>>,
    type_names: HashMap<*const String, Vec<Bound<'py, PyString>>>,
    zones: HashMap<i64, Bound<'py, PyAny>>,
    seen: HashMap<*const PsObject, Bound<'py, PyAny>>,
}

impl<'py, 'v, 'k> ToPy<'py, 'v, 'k> {
    pub fn new(py: Python<'py>, keys: &'k dyn Keys) -> PyResult<Self> {
        Ok(ToPy {
            py,
            c: classes(py)?,
            keys,
            names: HashMap::new(),
            type_names: HashMap::new(),
            zones: HashMap::new(),
            seen: HashMap::new(),
        })
    }

    /// One value (objects it shares through `<Ref>` become the same Python object).
    pub fn convert(&mut self, v: &'v Value) -> Result<Bound<'py, PyAny>, ConvertError> {
        self.seen.clear();
        let out = self.value(v);
        self.seen.clear();
        out
    }

    fn name(&mut self, s: &'v str) -> Bound<'py, PyString> {
        self.names.entry(s).or_insert_with(|| PyString::new(self.py, s)).clone()
    }

    /// A new list of the object's type names (each object gets its own list; the strings are shared).
    fn type_names(&mut self, o: &'v PsObject) -> PyResult<Bound<'py, PyList>> {
        let names: &'v [String] = o.type_names.as_deref().unwrap_or(&[]);
        if names.is_empty() {
            return Ok(PyList::empty(self.py));
        }
        let py = self.py;
        let strings = self
            .type_names
            .entry(names.as_ptr())
            .or_insert_with(|| names.iter().map(|n| PyString::new(py, n)).collect());
        PyList::new(py, strings.iter())
    }

    fn value(&mut self, v: &'v Value) -> Result<Bound<'py, PyAny>, ConvertError> {
        let py = self.py;
        let c = self.c;
        Ok(match v {
            Value::Nil => py.None().into_bound(py),
            Value::Str(s) | Value::Uri(s) | Value::Version(s) | Value::XmlDocument(s) | Value::ScriptBlock(s) => {
                PyString::new(py, s).into_any()
            }
            Value::Char(u) => {
                PyString::new(py, &char::from_u32(u32::from(*u)).unwrap_or('\u{FFFD}').to_string()).into_any()
            }
            Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            Value::U8(n) => n.into_pyobject(py)?.into_any(),
            Value::I8(n) => n.into_pyobject(py)?.into_any(),
            Value::U16(n) => n.into_pyobject(py)?.into_any(),
            Value::I16(n) => n.into_pyobject(py)?.into_any(),
            Value::U32(n) => n.into_pyobject(py)?.into_any(),
            Value::I32(n) => n.into_pyobject(py)?.into_any(),
            Value::U64(n) => n.into_pyobject(py)?.into_any(),
            Value::I64(n) => n.into_pyobject(py)?.into_any(),
            Value::Float(f) => PyFloat::new(py, f64::from(*f)).into_any(),
            Value::Double(f) => PyFloat::new(py, *f).into_any(),
            Value::Decimal(s) => c.decimal.bind(py).call1((s.as_str(),))?,
            Value::Bytes(b) => PyBytes::new(py, b).into_any(),
            Value::Guid(g) => c.uuid.bind(py).call1((g.as_hyphenated().to_string(),))?,
            Value::DateTime(s) => self.datetime(s).unwrap_or_else(|| PyString::new(py, s).into_any()),
            Value::Duration(s) => timedelta(py, c, s).unwrap_or_else(|| PyString::new(py, s).into_any()),
            Value::SecureString(ct) => {
                let plain = self.keys.decrypt(ct).ok_or(ConvertError::NeedKey)?;
                c.secure_string.bind(py).call1((plain.as_str(),))?
            }
            Value::Object(o) => {
                let key = Arc::as_ptr(o);
                if let Some(done) = self.seen.get(&key) {
                    return Ok(done.clone());
                }
                let obj = self.object(o)?;
                self.seen.insert(key, obj.clone());
                obj
            }
        })
    }

    fn object(&mut self, o: &'v PsObject) -> Result<Bound<'py, PyAny>, ConvertError> {
        let py = self.py;
        let c = self.c;
        // Enums: a type derived from System.Enum carrying its underlying integer.
        if has_type(o, "System.Enum")
            && let Some(n) = o.value.as_ref().and_then(Value::as_i64)
        {
            let name = o.to_string.clone().unwrap_or_default();
            return Ok(c.ps_enum.bind(py).call1((n, name, self.type_names(o)?))?);
        }
        if has_type(o, "System.Management.Automation.PSCredential") {
            let user = o.property("UserName").and_then(Value::as_str).unwrap_or_default().to_owned();
            let password = match o.property("Password") {
                Some(v @ Value::SecureString(_)) => self.value(v)?,
                _ => py.None().into_bound(py),
            };
            return Ok(c.credential.bind(py).call1((user, password))?);
        }
        let items: Option<Bound<'py, PyAny>> = match &o.container {
            Some(
                Container::List(items)
                | Container::Enumerable(items)
                | Container::Queue(items)
                | Container::Stack(items),
            ) => {
                let list = PyList::empty(py);
                for i in items {
                    list.append(self.value(i)?)?;
                }
                Some(list.into_any())
            }
            Some(Container::Dictionary(entries)) => {
                let dict = PyDict::new(py);
                for (k, v) in entries {
                    let key = self.value(k)?;
                    let val = self.value(v)?;
                    if dict.set_item(&key, &val).is_err() {
                        // Unhashable key (an object): fall back to its text.
                        dict.set_item(key.str()?, val)?;
                    }
                }
                Some(dict.into_any())
            }
            None => None,
        };
        // A plain list or hashtable with nothing else on it is just that.
        if let Some(items) = &items
            && o.adapted.is_empty()
            && o.extended.is_empty()
            && o.value.is_none()
        {
            return Ok(items.clone());
        }
        let adapted = self.props(&o.adapted)?;
        let extended = self.props(&o.extended)?;
        let value = match &o.value {
            Some(v) => self.value(v)?,
            None => py.None().into_bound(py),
        };
        let items = items.unwrap_or_else(|| py.None().into_bound(py));
        let type_names = self.type_names(o)?;
        Ok(c.ps_object.bind(py).call1((type_names, o.to_string.as_deref(), adapted, extended, value, items))?)
    }

    fn props(&mut self, list: &'v [(String, Value)]) -> Result<Bound<'py, PyDict>, ConvertError> {
        let d = PyDict::new(self.py);
        for (k, v) in list {
            let key = self.name(k);
            d.set_item(key, self.value(v)?)?;
        }
        Ok(d)
    }

    /// `2008-04-11T10:42:32.2731993-07:00` (offset, `Z` or none; none counts as UTC).
    fn datetime(&mut self, s: &str) -> Option<Bound<'py, PyAny>> {
        let (py, c) = (self.py, self.c);
        let (date, time) = s.split_once('T')?;
        let mut d = date.splitn(3, '-');
        let (y, mo, da) = (digits(d.next()?)?, digits(d.next()?)?, digits(d.next()?)?);
        let (clock, tz) = match time.find(['Z', '+', '-']) {
            Some(i) => time.split_at(i),
            None => (time, ""),
        };
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut t = hms.splitn(3, ':');
        let (h, mi, se) = (digits(t.next()?)?, digits(t.next()?)?, digits(t.next()?)?);
        let micros = if frac.is_empty() {
            0
        } else {
            let f: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
            digits(&f)?
        };
        let tzinfo = if tz.is_empty() || tz == "Z" {
            c.utc.bind(py).clone()
        } else {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (oh, om) = tz[1..].split_once(':')?;
            let minutes = sign * (digits(oh)? as i64 * 60 + digits(om)? as i64);
            match self.zones.get(&minutes) {
                Some(zone) => zone.clone(),
                None => {
                    let delta =
                        c.timedelta.bind(py).call((), Some(&[("minutes", minutes)].into_py_dict(py).ok()?)).ok()?;
                    let zone = c.timezone.bind(py).call1((delta,)).ok()?;
                    self.zones.insert(minutes, zone.clone());
                    zone
                }
            }
        };
        c.datetime.bind(py).call1((y, mo, da, h, mi, se, micros, tzinfo)).ok()
    }
}

fn has_type(o: &PsObject, name: &str) -> bool {
    o.type_names
        .as_deref()
        .is_some_and(|t| t.iter().any(|n| n == name || n.strip_prefix("Deserialized.") == Some(name)))
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// xs:duration as .NET writes TimeSpans: `[-]P[nD][T[nH][nM][n[.f]S]]`.
fn timedelta<'py>(py: Python<'py>, c: &Classes, s: &str) -> Option<Bound<'py, PyAny>> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let rest = rest.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut days = 0i64;
    if !date.is_empty() {
        days = digits(date.strip_suffix('D')?)? as i64;
    }
    let mut micros: i64 = 0;
    let mut num = String::new();
    for ch in time.chars() {
        match ch {
            '0'..='9' | '.' => num.push(ch),
            'H' => micros += num.parse::<i64>().ok()? * 3_600_000_000,
            'M' => micros += num.parse::<i64>().ok()? * 60_000_000,
            'S' => {
                let (whole, frac) = num.split_once('.').unwrap_or((&num, ""));
                micros += whole.parse::<i64>().ok()? * 1_000_000;
                if !frac.is_empty() {
                    let f: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
                    micros += f.parse::<i64>().ok()?;
                }
            }
            _ => return None,
        }
        if matches!(ch, 'H' | 'M' | 'S') {
            num.clear();
        }
    }
    let sign = if neg { -1 } else { 1 };
    let kwargs = [("days", sign * days), ("microseconds", sign * micros)].into_py_dict(py).ok()?;
    c.timedelta.bind(py).call((), Some(&kwargs)).ok()
}

use pyo3::types::IntoPyDict;

fn enum_obj(type_names: Vec<String>, name: String, value: i64) -> Value {
    let v = i32::try_from(value).map(Value::I32).unwrap_or(Value::I64(value));
    Value::Object(Arc::new(PsObject {
        type_names: Some(type_names.into()),
        to_string: Some(name),
        value: Some(v),
        ..PsObject::new()
    }))
}

/// Converts a Python object to a value (inputs and parameters).
pub fn from_py(obj: &Bound<'_, PyAny>, keys: &dyn Keys) -> Result<Value, ConvertError> {
    let py = obj.py();
    let c = classes(py)?;
    from_py_inner(py, c, obj, keys, 0)
}

const MAX_INPUT_DEPTH: usize = 100;

fn from_py_inner(
    py: Python<'_>,
    c: &Classes,
    obj: &Bound<'_, PyAny>,
    keys: &dyn Keys,
    depth: usize,
) -> Result<Value, ConvertError> {
    if depth > MAX_INPUT_DEPTH {
        return Err(PyValueError::new_err("value nested deeper than 100 levels (a cycle?)").into());
    }
    if obj.is_none() {
        return Ok(Value::Nil);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance(c.ps_enum.bind(py))? {
        let value: i64 = obj.extract()?;
        let name: String = obj.getattr("name")?.extract()?;
        let type_names: Vec<String> = obj.getattr("type_names")?.extract()?;
        return Ok(enum_obj(type_names, name, value));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(n) = obj.extract::<i32>() {
            return Ok(Value::I32(n));
        }
        if let Ok(n) = obj.extract::<i64>() {
            return Ok(Value::I64(n));
        }
        if let Ok(n) = obj.extract::<u64>() {
            return Ok(Value::U64(n));
        }
        return Err(
            PyValueError::new_err("integer out of range for PowerShell (beyond 64 bits); pass a Decimal").into()
        );
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Double(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if obj.is_instance(c.secure_string.bind(py))? {
        let plain: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(obj.call_method0("get_value")?.extract()?);
        return keys.encrypt(&plain).ok_or(ConvertError::NeedKey);
    }
    if obj.is_instance(c.credential.bind(py))? {
        let user: String = obj.getattr("username")?.extract()?;
        let password = from_py_inner(py, c, &obj.getattr("password")?, keys, depth + 1)?;
        return Ok(Value::Object(Arc::new(PsObject {
            type_names: Some(
                vec!["System.Management.Automation.PSCredential".to_owned(), "System.Object".to_owned()].into(),
            ),
            adapted: vec![("UserName".into(), Value::Str(user)), ("Password".into(), password)],
            ..PsObject::new()
        })));
    }
    if obj.is_instance(c.ps_object.bind(py))? {
        let type_names: Vec<String> = obj.getattr("type_names")?.extract()?;
        let to_string: Option<String> = obj.getattr("to_string")?.extract()?;
        let props = |name: &str| -> Result<Vec<(String, Value)>, ConvertError> {
            let d = obj.getattr(name)?;
            let d = d.cast::<PyDict>().map_err(|_| PyTypeError::new_err(format!("PSObject.{name} must be a dict")))?;
            let mut out = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                out.push((k.extract::<String>()?, from_py_inner(py, c, &v, keys, depth + 1)?));
            }
            Ok(out)
        };
        let adapted = props("adapted_properties")?;
        let extended = props("extended_properties")?;
        let value = obj.getattr("value")?;
        let value = if value.is_none() { None } else { Some(from_py_inner(py, c, &value, keys, depth + 1)?) };
        let items = obj.getattr("items")?;
        let container = if items.is_none() {
            None
        } else {
            match from_py_inner(py, c, &items, keys, depth + 1)? {
                Value::Object(o) => o.container.clone(),
                _ => None,
            }
        };
        return Ok(Value::Object(Arc::new(PsObject {
            type_names: (!type_names.is_empty()).then(|| type_names.into()),
            to_string,
            value,
            container,
            adapted,
            extended,
        })));
    }
    if obj.is_instance(c.decimal.bind(py))? {
        return Ok(Value::Decimal(obj.str()?.to_cow()?.into_owned()));
    }
    if obj.is_instance(c.uuid.bind(py))? {
        let s: String = obj.str()?.extract()?;
        return uuid::Uuid::parse_str(&s).map(Value::Guid).map_err(|e| PyValueError::new_err(e.to_string()).into());
    }
    if obj.is_instance(c.datetime.bind(py))? {
        return Ok(Value::DateTime(obj.call_method1("isoformat", ("T", "microseconds"))?.extract()?));
    }
    if obj.is_instance(c.timedelta.bind(py))? {
        let days: i64 = obj.getattr("days")?.extract()?;
        let secs: i64 = obj.getattr("seconds")?.extract()?;
        let us: i64 = obj.getattr("microseconds")?.extract()?;
        let total = (days * 86_400 + secs) * 1_000_000 + us;
        let (sign, total) = if total < 0 { ("-", -total) } else { ("", total) };
        return Ok(Value::Duration(format!("{sign}PT{}.{:06}S", total / 1_000_000, total % 1_000_000)));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            entries.push((from_py_inner(py, c, &k, keys, depth + 1)?, from_py_inner(py, c, &v, keys, depth + 1)?));
        }
        return Ok(Value::Object(Arc::new(PsObject {
            type_names: Some(vec!["System.Collections.Hashtable".to_owned(), "System.Object".to_owned()].into()),
            container: Some(Container::Dictionary(entries)),
            ..PsObject::new()
        })));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for i in obj.try_iter()? {
            items.push(from_py_inner(py, c, &i?, keys, depth + 1)?);
        }
        return Ok(Value::Object(Arc::new(PsObject {
            type_names: Some(
                vec!["System.Object[]".to_owned(), "System.Array".to_owned(), "System.Object".to_owned()].into(),
            ),
            container: Some(Container::List(items)),
            ..PsObject::new()
        })));
    }
    if c.is_dataclass.bind(py).call1((obj,))?.is_truthy()? && !obj.is_instance_of::<pyo3::types::PyType>() {
        let mut props = Vec::new();
        for f in c.dataclasses_fields.bind(py).call1((obj,))?.try_iter()? {
            let name: String = f?.getattr("name")?.extract()?;
            let v = obj.getattr(name.as_str())?;
            props.push((name, from_py_inner(py, c, &v, keys, depth + 1)?));
        }
        return Ok(Value::Object(Arc::new(PsObject::custom(props))));
    }
    Err(PyTypeError::new_err(format!(
        "cannot send a {} to PowerShell; use str, int, float, bool, None, bytes, Decimal, UUID, datetime, \
         timedelta, list, dict, a dataclass, PSObject, SecureString or PSCredential",
        obj.get_type().name()?
    ))
    .into())
}
