//! The `flows` table as SQL sees it: the stored columns, with the ones the
//! engine leaves null where derivable (`community_id`, `duration`,
//! `flow_start`; see `tapstream_engine::derived`) filled in on read, and
//! the stored-only `community_id_seed` hidden.
//!
//! A scan reads each derived column's sources and computes it in a
//! projection above the Parquet scan, only when the query asks for it.
//! Conditions on derived columns are tested after that projection;
//! conditions on stored columns still go to the scan (pages, row groups
//! and hours are pruned as before).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TableProviderFilterPushDown,
    Volatility, col,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use tapstream_engine::derived::{self, DERIVED, SEED_COLUMN};

/// Computes one derived column from its sources (`derived::sources`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Derive {
    column: &'static str,
    name: String,
    signature: Signature,
}

impl Derive {
    fn udf(column: &'static str) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Derive {
            column,
            name: format!("tapstream_derive_{column}"),
            signature: Signature::variadic_any(Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for Derive {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types.first().cloned().ok_or_else(|| DataFusionError::Internal(format!("{} without arguments", self.name)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array(derived::derive_from(self.column, &arrays)?))
    }
}

/// Wraps the stored `flows` listing (behind its time guard).
#[derive(Debug)]
pub struct FlowsView {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
}

impl FlowsView {
    pub fn new(inner: Arc<dyn TableProvider>) -> FlowsView {
        let stored = inner.schema();
        let fields = stored.fields().iter().filter(|f| f.name() != SEED_COLUMN).cloned().collect::<Vec<_>>();
        FlowsView { inner, schema: Arc::new(Schema::new_with_metadata(fields, stored.metadata().clone())) }
    }
}

fn is_derived(name: &str) -> bool {
    DERIVED.contains(&name)
}

fn mentions_derived(e: &Expr) -> bool {
    e.column_refs().iter().any(|c| is_derived(&c.name))
}

#[async_trait]
impl TableProvider for FlowsView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        let passed: Vec<&Expr> = filters.iter().copied().filter(|e| !mentions_derived(e)).collect();
        let mut answers = self.inner.supports_filters_pushdown(&passed)?.into_iter();
        Ok(filters
            .iter()
            .map(|e| {
                if mentions_derived(e) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    answers.next().unwrap_or(TableProviderFilterPushDown::Unsupported)
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let stored = self.inner.schema();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let names: Vec<&str> = wanted.iter().map(|i| self.schema.field(*i).name().as_str()).collect();
        // `filters` holds only what `supports_filters_pushdown` accepted:
        // no condition on a derived column reaches the stored scan.
        if !names.iter().any(|n| is_derived(n)) {
            let mapped = names.iter().map(|n| stored.index_of(n)).collect::<std::result::Result<Vec<_>, _>>()?;
            return self.inner.scan(state, Some(&mapped), filters, limit).await;
        }
        let mut need = BTreeSet::new();
        for n in &names {
            let sources = if is_derived(n) { derived::sources(n) } else { std::slice::from_ref(n) };
            for s in sources {
                need.insert(stored.index_of(s)?);
            }
        }
        let need: Vec<usize> = need.into_iter().collect();
        let plan = self.inner.scan(state, Some(&need), filters, limit).await?;
        let scanned = DFSchema::try_from(plan.schema().as_ref().clone())?;
        let exprs = names
            .iter()
            .map(|n| {
                let e = match DERIVED.iter().find(|d| *d == n) {
                    Some(d) => Expr::ScalarFunction(ScalarFunction::new_udf(
                        Derive::udf(d),
                        derived::sources(d).iter().map(|s| col(*s)).collect(),
                    )),
                    None => col(*n),
                };
                Ok((state.create_physical_expr(e, &scanned)?, n.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}
