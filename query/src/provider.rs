//! The `spans` table: the tenant's Delta table unioned with the spans still in the write buffer.
//!
//! Each scan takes one consistent [`TenantSnapshot`] from storage, so a span is seen exactly
//! once whether or not a flush commits it meanwhile.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use tracelake_storage::{Storage, TenantSnapshot};

/// A tenant's spans: Delta table ∪ write buffer.
#[derive(Debug)]
pub(crate) struct SpansTable {
    storage: Arc<Storage>,
    tenant: String,
    schema: SchemaRef,
}

impl SpansTable {
    pub(crate) fn new(storage: Arc<Storage>, tenant: String) -> Self {
        Self {
            storage,
            tenant,
            schema: tracelake_proto::span_schema(),
        }
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune the Delta scan (partitions, statistics, bloom filters); DataFusion still
        // applies them above the union, which also covers the buffered spans.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let TenantSnapshot { table, buffered } = self
            .storage
            .snapshot(&self.tenant)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(2);
        if let Some(table) = table {
            table
                .update_datafusion_session(state)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let snapshot = table
                .snapshot()
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .snapshot()
                .clone();
            let mut config = DeltaScanConfig::new()
                .with_wrap_partition_values(false)
                .with_schema(Arc::clone(&self.schema));
            config.schema_force_view_types = false;
            let scan = DeltaScanNext::new(snapshot, config)?;
            inputs.push(scan.scan(state, projection, filters, limit).await?);
        }
        if !buffered.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[buffered],
                Arc::clone(&self.schema),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(inputs)
    }
}
