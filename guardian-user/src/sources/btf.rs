//! The running kernel's BTF (`/sys/kernel/btf/vmlinux`), parsed with `btfparse`, for the struct
//! member offsets the probe needs. Offsets are looked up by path, so anonymous unions and nested
//! members resolve the same way on every kernel.

use btfparse::{ErrorKind, Integer32Value, Offset, Readable, TypeInformation, TypeVariant};
use std::path::Path;

/// BTF bytes as a `btfparse` reader.
struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buffer.len()).ok_or_else(eof)?;
        let src = self.0.get(start..end).ok_or_else(eof)?;
        buffer.copy_from_slice(src);
        Ok(())
    }
}

fn eof() -> btfparse::Error {
    btfparse::Error::new(ErrorKind::EOF, "read past the end of the BTF data")
}

/// Parsed kernel type information.
pub struct KernelBtf {
    types: TypeInformation,
}

impl KernelBtf {
    /// Parses the running kernel's BTF.
    pub fn open() -> Result<KernelBtf, String> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<KernelBtf, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let types = TypeInformation::new(&Bytes(bytes))
            .map_err(|e| format!("cannot parse {}: {e:?}", path.display()))?;
        Ok(KernelBtf { types })
    }

    /// Byte offset of `path` (e.g. `f_path` or `d_name.len`) inside struct `ty`.
    pub fn offset_of(&self, ty: &str, path: &str) -> Result<u64, String> {
        let id = self
            .types
            .id_of(ty)
            .ok_or_else(|| format!("no type named {ty}"))?;
        match self.types.offset_of(id, path) {
            Ok((_, Offset::ByteOffset(bytes))) => Ok(bytes as u64),
            Ok((_, Offset::BitOffsetAndSize(..))) => Err(format!("{ty}.{path} is a bitfield")),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    /// BTF id of the kernel function `name` (a kfunc, say), if this kernel has one.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.types.get().iter().find_map(|(id, ty)| match ty {
            TypeVariant::Func(func) if func.name().as_deref() == Some(name) => Some(*id),
            _ => None,
        })
    }

    /// The per-CPU variable `name` (one of the `.data..percpu` section's): its offset in the
    /// section (the same in every CPU's copy) and the id of its type.
    pub fn percpu_var(&self, name: &str) -> Option<(u32, u32)> {
        let types = self.types.get();
        let section = types.values().find_map(|t| match t {
            TypeVariant::DataSec(section) if section.name().as_deref() == Some(".data..percpu") => {
                Some(section)
            }
            _ => None,
        })?;
        section
            .variable_list()
            .iter()
            .find_map(|v| match types.get(&v.var_decl_id) {
                Some(TypeVariant::Var(var)) if var.name().as_deref() == Some(name) => {
                    Some((v.offset, *var.tid()))
                }
                _ => None,
            })
    }

    /// Whether type `id` is a pointer to `struct pointee`.
    pub fn points_to_struct(&self, id: u32, pointee: &str) -> bool {
        self.types
            .pointee_tid(id)
            .ok()
            .and_then(|target| self.types.from_id(target))
            .is_some_and(
                |t| matches!(t, TypeVariant::Struct(s) if s.name().as_deref() == Some(pointee)),
            )
    }

    /// Element count of the array member `member` of struct `ty`.
    pub fn array_len(&self, ty: &str, member: &str) -> Result<u64, String> {
        let (member_type, _) = self
            .types
            .offset_of(self.struct_id(ty)?, member)
            .map_err(|e| format!("{ty}.{member}: {e:?}"))?;
        match self.types.from_id(member_type) {
            Some(TypeVariant::Array(array)) => Ok(u64::from(*array.element_count())),
            _ => Err(format!("{ty}.{member} is not an array")),
        }
    }

    /// The value of `name` in `enum ty` (e.g. `PG_head` of `pageflags`).
    pub fn enum_value(&self, ty: &str, name: &str) -> Result<u32, String> {
        let values = self
            .types
            .get()
            .values()
            .find_map(|t| match t {
                TypeVariant::Enum(e) if e.name().as_deref() == Some(ty) => {
                    Some(e.named_value_list())
                }
                _ => None,
            })
            .ok_or_else(|| format!("no enum named {ty}"))?;
        let value = values
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| format!("enum {ty} has no {name}"))?;
        match value.value {
            Integer32Value::Unsigned(v) => Ok(v),
            Integer32Value::Signed(v) => {
                u32::try_from(v).map_err(|_| format!("{ty}::{name} is negative ({v})"))
            }
        }
    }

    /// BTF id of `struct ty`.
    pub fn struct_id(&self, ty: &str) -> Result<u32, String> {
        self.types
            .get()
            .iter()
            .find_map(|(id, t)| match t {
                TypeVariant::Struct(s) if s.name().as_deref() == Some(ty) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| format!("no struct named {ty}"))
    }

    /// BTF id of `struct ty`, checked to start with `member`, a pointer to `struct pointee`.
    pub fn struct_starting_with_pointer(
        &self,
        ty: &str,
        member: &str,
        pointee: &str,
    ) -> Result<u32, String> {
        let id = self.struct_id(ty)?;
        let (member_type, offset) = self
            .types
            .offset_of(id, member)
            .map_err(|e| format!("{ty}.{member}: {e:?}"))?;
        if !matches!(offset, Offset::ByteOffset(0)) {
            return Err(format!("{ty}.{member} is not its first member"));
        }
        let target = self
            .types
            .pointee_tid(member_type)
            .map_err(|e| format!("{ty}.{member} is not a pointer: {e:?}"))?;
        match self.types.from_id(target) {
            Some(TypeVariant::Struct(s)) if s.name().as_deref() == Some(pointee) => Ok(id),
            _ => Err(format!("{ty}.{member} does not point to struct {pointee}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_per_cpu_variables_and_their_types_on_this_kernel() {
        let btf = KernelBtf::open().expect("this kernel has BTF");
        let (at, ty) = btf
            .percpu_var("current_task")
            .expect("x86-64 Linux 6.18 keeps current in the per-CPU current_task");
        assert!(btf.points_to_struct(ty, "task_struct"));
        assert!(!btf.points_to_struct(ty, "file"));
        let (rq, _) = btf.percpu_var("runqueues").expect("per-CPU runqueues");
        assert_ne!(at, rq);
        assert_eq!(btf.percpu_var("no_such_per_cpu_variable"), None);
        // A global that is not per-CPU is not found as one.
        assert_eq!(btf.percpu_var("jiffies"), None);
    }

    #[test]
    fn reads_offsets_of_this_kernel() {
        let Ok(btf) = KernelBtf::open() else {
            crate::testkit::skip(
                "reads_offsets_of_this_kernel",
                "no /sys/kernel/btf/vmlinux on this kernel",
            );
            return;
        };
        // Offsets the probe depends on exist and are plausible.
        for (ty, member) in [
            ("task_struct", "files"),
            ("files_struct", "fdt"),
            ("fdtable", "fd"),
            ("file", "f_inode"),
            ("dentry", "d_parent"),
            ("inode", "i_ino"),
            ("super_block", "s_dev"),
        ] {
            let off = btf.offset_of(ty, member).unwrap();
            assert!(off < 16384, "{ty}.{member} at {off}");
        }
        assert_eq!(btf.offset_of("path", "mnt").unwrap(), 0);
        assert!(btf.offset_of("dentry", "no_such_member").is_err());
        // The free path's flag bit: PG_head is a small bit number on every kernel.
        assert!(btf.enum_value("pageflags", "PG_head").unwrap() < 32);
        assert!(btf.enum_value("pageflags", "no_such_flag").is_err());
        assert!(btf.offset_of("no_such_struct", "x").is_err());
    }
}
